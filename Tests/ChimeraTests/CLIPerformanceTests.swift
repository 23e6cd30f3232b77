import Foundation
import Testing

/// `chimera quantize` and `chimera bench` end to end through the executable.
@Suite struct CLIPerformanceTests {
    @Test func quantizeThenGenerate() throws {
        let out = try CLI.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: out) }
        for format in ["q8_0", "q4_0"] {
            let folder = out.appendingPathComponent(format).path
            let q = try CLI.run(["quantize", "chimera-tiny-default", "--to", format, "-o", folder])
            #expect(q.status == 0, "\(q.all)")
            let assembly = q.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(assembly.hasSuffix("chimera-tiny-default-\(format).assembly.json"))
            let manifest = try String(contentsOfFile: "\(folder)/chimera-tiny-default-llm-\(format).component.json", encoding: .utf8)
            #expect(manifest.contains("\"quantization\"") && manifest.contains("\"block_size\" : 32"))
            // The q4_0 run keeps its KV cache in float16.
            let g = try CLI.run(["generate", "--assembly", assembly, "--max-tokens", "4", "--json"] + (format == "q4_0" ? ["--kv-cache", "f16"] : []))
            #expect(g.status == 0, "\(g.all)")
            let json = try JSONSerialization.jsonObject(with: Data(g.stdout.utf8)) as? [String: Any]
            #expect((json?["tokens"] as? [Int])?.isEmpty == false)
            // The same weights read in place from the mapped files: the same tokens.
            let mapped = try CLI.run(["generate", "--assembly", assembly, "--max-tokens", "4", "--json", "--mapped-weights"]
                                     + (format == "q4_0" ? ["--kv-cache", "f16"] : []))
            let mappedJSON = try JSONSerialization.jsonObject(with: Data(mapped.stdout.utf8)) as? [String: Any]
            #expect(mapped.status == 0 && mappedJSON?["tokens"] as? [Int] == json?["tokens"] as? [Int], "\(mapped.all)")
        }
        let bad = try CLI.run(["quantize", "chimera-tiny-default", "--to", "q3_k"])
        #expect(bad.status != 0 && bad.stderr.contains("q8_0, q6_0, q4_0"))
        let badFormat = try CLI.run(["quantize", "chimera-tiny-default", "--to", "q4_0", "--matrix-format", "lm_head.=q3_k"])
        #expect(badFormat.status != 0 && badFormat.stderr.contains("expected PREFIX=FORMAT"), "\(badFormat.all)")
        // Matrices given a float format are not counted as quantized; a prefix that matches nothing
        // is named; an empty --keep (every matrix) is refused.
        let mixed = try CLI.run(["quantize", "chimera-tiny-default", "--to", "q4_0", "-o", try CLI.temporaryFolder().path,
                                 "--matrix-format", "model.language_model.layers.=f16", "--keep", "nothing."])
        #expect(mixed.status == 0 && mixed.stderr.contains("1 matrix quantized")
                && mixed.stderr.contains("warning: no matrix of the quantized components starts with 'nothing.'"), "\(mixed.all)")
        // Its weights gone, a quantized assembly says to quantize again (its source is a local folder,
        // no repository to download).
        let gone = try CLI.temporaryFolder()
        #expect(try CLI.run(["quantize", "chimera-tiny-default", "--to", "q8_0", "-o", gone.path]).status == 0)
        try FileManager.default.removeItem(at: gone.appendingPathComponent("chimera-tiny-default-llm-q8_0.safetensors"))
        let missing = try CLI.run(["generate", "--assembly", gone.appendingPathComponent("chimera-tiny-default-q8_0.assembly.json").path])
        #expect(missing.status != 0 && missing.stderr.contains("(written by chimera quantize: quantize the original assembly again)")
                && !missing.stderr.contains("huggingface-cli download"), "\(missing.all)")
        let everything = try CLI.run(["quantize", "chimera-tiny-default", "--to", "q4_0", "--keep", ""])
        #expect(everything.status != 0 && everything.stderr.contains("--keep needs a prefix"), "\(everything.all)")
        // An assembly that would not run (its encoder named as the language model) is refused as
        // generate refuses it, and nothing is written.
        let misfit = try CLI.temporaryFolder().appendingPathComponent("misfit.assembly.json")
        try Data("""
            { "schema": "chimera.assembly/v1", "id": "misfit", "language_model": "chimera-tiny-default-vision", "inputs": [] }
            """.utf8).write(to: misfit)
        let unwritten = try CLI.temporaryFolder().appendingPathComponent("out")
        let refused = try CLI.run(["quantize", misfit.path, "--to", "q8_0", "-o", unwritten.path])
        #expect(refused.status != 0 && refused.stderr.contains("'chimera-tiny-default-vision' is of kind encoder"), "\(refused.all)")
        #expect(!FileManager.default.fileExists(atPath: unwritten.path))
    }

    /// Weights named as a folder ("weights/": its *.safetensors, as the catalogue's manifests name
    /// downloads) are found by bench and quantize too, and a quantized assembly's untouched
    /// components still name the folder.
    @Test func weightFoldersServeBenchAndQuantize() throws {
        let assembly = try ManifestFixtures.copyOfDefaults(renamedTo: "foldered")
        let folder = assembly.deletingLastPathComponent(), weights = folder.appendingPathComponent("weights")
        try FileManager.default.createDirectory(at: weights, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: folder.appendingPathComponent("checkpoint/model.safetensors"),
                                         to: weights.appendingPathComponent("model.safetensors"))
        for name in try FileManager.default.contentsOfDirectory(atPath: folder.path) where name.hasSuffix(".component.json") {
            let url = folder.appendingPathComponent(name)
            var m = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
            var reference = try #require(m["weights"] as? [String: Any])
            reference["files"] = ["weights/"]
            m["weights"] = reference
            try JSONSerialization.data(withJSONObject: m).write(to: url)
        }
        let bench = try CLI.run(["bench", "--assembly", assembly.path, "--no-bandwidth", "--encode-runs", "1", "--prompt-tokens", "8",
                                 "--decode-tokens", "2"])
        #expect(bench.status == 0, "\(bench.all)")
        let out = try CLI.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: out) }
        let q = try CLI.run(["quantize", assembly.path, "--to", "q8_0", "-o", out.path])
        #expect(q.status == 0, "\(q.all)")
        let encoder = try String(contentsOf: out.appendingPathComponent("foldered-vision-q8_0.component.json"), encoding: .utf8)
        #expect(encoder.contains(weights.path + "/"), "\(encoder)")
        let g = try CLI.run(["generate", "--assembly", q.stdout.trimmingCharacters(in: .whitespacesAndNewlines), "--max-tokens", "2",
                             "--image", folder.appendingPathComponent("checkpoint/sample.png").path, "--prompt", "USER: <image> hi"])
        #expect(g.status == 0, "\(g.all)")
    }

    @Test func benchReportsJSON() throws {
        let r = try CLI.run(["bench", "--synthetic", "tiny", "--dtype", "q8_0", "--prompt-tokens", "16", "--decode-tokens", "2",
                             "--encode-runs", "2", "--kv-cache", "f16"])
        #expect(r.status == 0, "\(r.all)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        for key in ["image_encode_s", "prefill_tokens_per_s", "decode_tokens_per_s", "time_to_first_token_s", "peak_rss_bytes",
                    "weight_dtype", "threads", "cpu_features", "load_s"] {
            #expect(json[key] != nil, "\(key)")
        }
        #expect(json["weight_dtype"] as? String == "q8_0" && json["kv_cache"] as? String == "f16")
        #expect(["bf16-dot", "float"].contains(json["bf16_gemm"] as? String), "\(String(describing: json["bf16_gemm"]))")
        #expect(json["image_encode_runs"] as? Int == 2 && json["image_encode_first_s"] is Double)
        #expect(json["sampling"] as? String == "greedy" && json["decode_sampling_s"] is Double)
        // A sampled decode: the sampler's options in the report, its time per token apart.
        let sampled = try CLI.run(["bench", "--synthetic", "tiny", "--no-encoder", "--no-bandwidth", "--prompt-tokens", "8",
                                   "--decode-tokens", "3", "--temperature", "0.7", "--top-k", "5", "--top-p", "0.9", "--seed", "3"])
        let sampledJSON = try JSONSerialization.jsonObject(with: Data(sampled.stdout.utf8)) as? [String: Any]
        #expect(sampled.status == 0 && sampledJSON?["sampling"] as? String == "temperature 0.7, top-k 5, top-p 0.9, seed 3", "\(sampled.all)")
        #expect((sampledJSON?["decode_sampling_s"] as? Double ?? 0) > 0)
        let badTopP = try CLI.run(["bench", "--synthetic", "tiny", "--no-encoder", "--no-bandwidth", "--temperature", "1", "--top-p", "1.5"])
        #expect(badTopP.status != 0 && badTopP.stderr.contains("--top-p must be in (0, 1], found 1.5"), "\(badTopP.all)")
        let badCache = try CLI.run(["bench", "--synthetic", "tiny", "--kv-cache", "f8"])
        #expect(badCache.status != 0 && badCache.stderr.contains("'f8' is invalid for '--kv-cache") && badCache.stderr.contains("'f16'"))
        let badSeed = try CLI.run(["bench", "--synthetic", "tiny", "--seed", "-1"])  // (it said "Missing value")
        #expect(badSeed.status != 0 && badSeed.stderr.contains("The value '-1' is invalid for '--seed <seed>'"), "\(badSeed.all)")
        let mapped = try CLI.run(["bench", "--assembly", "chimera-tiny-default", "--no-encoder", "--no-bandwidth", "--prompt-tokens", "8",
                                  "--decode-tokens", "2", "--mapped-weights"])
        let mappedJSON = try JSONSerialization.jsonObject(with: Data(mapped.stdout.utf8)) as? [String: Any]
        #expect(mapped.status == 0 && mappedJSON?["stored_matrices"] as? String == "mapped", "\(mapped.all)")
        #expect((mappedJSON?["load_s"] as? Double ?? 0) > 0)
        let synthetic = try CLI.run(["bench", "--synthetic", "tiny", "--mapped-weights"])
        #expect(synthetic.status != 0 && synthetic.stderr.contains("--mapped-weights needs --assembly"))
        let folder = try CLI.run(["bench", "--assembly", "/usr", "--no-bandwidth"])
        #expect(folder.status != 0 && folder.stderr.contains("/usr: --assembly is a folder"), "\(folder.all)")
        let unknown = try CLI.run(["bench", "--synthetic", "nope"])
        #expect(unknown.status != 0 && unknown.stderr.contains("tinyllama-1.1b"))
    }
}
