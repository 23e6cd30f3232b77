import ChimeraComponents
import ChimeraTensor
import Foundation
import Testing
@testable import Chimera

/// Manifests written into fresh temporary folders, starting from the shipped default ones.
enum ManifestFixtures {
    /// The package root: three levels up from Tests/ChimeraTests/ManifestTests.swift.
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    /// The built-in catalog folder.
    static var builtin: URL { root.appendingPathComponent("manifests") }
    static var defaults: URL { builtin.appendingPathComponent("default") }
    static let encoderID = "chimera-tiny-default-vision"
    static let connectorID = "chimera-tiny-default-projector"
    static let llmID = "chimera-tiny-default-llm"
    static let assemblyID = "chimera-tiny-default"

    static func temporaryFolder() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("chimera-manifest-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// A shipped manifest as a JSON object ("chimera-tiny-default-llm.component.json").
    static func shipped(_ id: String) throws -> [String: Any] {
        let name = id == assemblyID ? "\(id).assembly.json" : "\(id).component.json"
        let data = try Data(contentsOf: defaults.appendingPathComponent(name))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    /// A shipped component whose relative paths (weights, tokenizer) are made absolute, so that it
    /// still finds its files when written elsewhere.
    static func relocatable(_ id: String) throws -> [String: Any] {
        var m = try shipped(id)
        let base = defaults.path + "/"
        if var weights = m["weights"] as? [String: Any], let files = weights["files"] as? [String] {
            weights["files"] = files.map { $0.hasPrefix("/") ? $0 : base + $0 }
            m["weights"] = weights
        }
        if var tokenizer = m["tokenizer"] as? [String: Any], let file = tokenizer["file"] as? String, !file.hasPrefix("/") {
            tokenizer["file"] = base + file
            m["tokenizer"] = tokenizer
        }
        return m
    }

    /// A copy of the default model's folder with every id renamed (`id` for chimera-tiny-default,
    /// so that the copy and the built-in one can be loaded together); returns its assembly file.
    static func copyOfDefaults(renamedTo id: String) throws -> URL {
        let folder = try temporaryFolder().appendingPathComponent(id)
        try FileManager.default.copyItem(at: defaults, to: folder)
        for name in try FileManager.default.contentsOfDirectory(atPath: folder.path) where name.hasSuffix(".json") {
            let url = folder.appendingPathComponent(name)
            try String(contentsOf: url, encoding: .utf8).replacingOccurrences(of: assemblyID, with: id)
                .write(to: url, atomically: true, encoding: .utf8)
        }
        return folder.appendingPathComponent("\(assemblyID).assembly.json")
    }

    /// `relocatable(id)` with its config changed by `change`.
    static func relocatable(_ id: String, config change: (inout [String: Any]) throws -> Void) throws -> [String: Any] {
        var m = try relocatable(id)
        var config = try #require(m["config"] as? [String: Any])
        try change(&config)
        m["config"] = config
        return m
    }

    @discardableResult
    static func write(_ object: [String: Any], to folder: URL, name: String) throws -> URL {
        let url = folder.appendingPathComponent(name)
        try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys]).write(to: url)
        return url
    }

    @discardableResult
    static func write(text: String, to folder: URL, name: String) throws -> URL {
        let url = folder.appendingPathComponent(name)
        try Data(text.utf8).write(to: url)
        return url
    }

    /// Loads a file that must be refused; returns the error's message.
    static func loadError(_ url: URL) -> String {
        do {
            let manifest = try AnyManifest.load(contentsOf: url)
            Issue.record("\(url.lastPathComponent) was accepted as '\(manifest.id)'")
            return ""
        } catch {
            return message(error)
        }
    }

    /// Writes shipped manifest `id` changed by `change` to a fresh folder, loads it, expects it
    /// refused with a message that names the file, and returns that message.
    static func refusal(of id: String, _ change: (inout [String: Any]) throws -> Void) throws -> String {
        var m = try shipped(id)
        try change(&m)
        let url = try write(m, to: try temporaryFolder(), name: "\(id).json")
        let message = loadError(url)
        #expect(message.hasPrefix(url.path + ": "), "names the file: \(message)")
        return message
    }

    static func message(_ error: Error) -> String { (error as? LocalizedError)?.errorDescription ?? "\(error)" }

    static func component(_ object: [String: Any], in folder: URL, name: String = "c.component.json") throws -> ComponentManifest {
        guard case let .component(m) = try AnyManifest.load(contentsOf: try write(object, to: folder, name: name)) else {
            throw ManifestError.invalid(file: name, detail: "expected a component")
        }
        return m
    }

    /// The built-in catalog (manifests/), then `folders`.
    static func catalog(adding folders: [URL] = []) throws -> Catalog {
        var catalog = Catalog()
        try catalog.load(directory: builtin)
        for folder in folders { try catalog.load(directory: folder) }
        return catalog
    }
}

private typealias F = ManifestFixtures

/// Every manifest test, under one name for `swift test --filter ManifestTests`.
@Suite struct ManifestTests {}

// MARK: - Bad input: errors name the file and the JSON path

extension ManifestTests {
    @Suite struct Errors {
        @Test func malformedJSONNamesTheFile() throws {
            let url = try F.write(text: #"{"schema": "chimera.component/v1", "id": "x",, }"#, to: try F.temporaryFolder(), name: "broken.json")
            let message = F.loadError(url)
            #expect(message.hasPrefix(url.path + ": not valid JSON"), "\(message)")
        }

        @Test func nonObjectJSONIsRefused() throws {
            let url = try F.write(text: "[1, 2, 3]", to: try F.temporaryFolder(), name: "list.json")
            #expect(F.loadError(url) == url.path + ": not a JSON object")
        }

        @Test func missingSchema() throws {
            let message = try F.refusal(of: F.llmID) { $0["schema"] = nil }
            #expect(message.contains("schema: required field is missing"))
        }

        @Test func wrongSchemaVersion() throws {
            let message = try F.refusal(of: F.llmID) { $0["schema"] = "chimera.component/v2" }
            #expect(message.contains(#"found "chimera.component/v2""#))
            #expect(message.contains(ComponentManifest.schemaVersion))
        }

        @Test func unknownTopLevelField() throws {
            let message = try F.refusal(of: F.llmID) { $0["contxt_length"] = 512 }
            #expect(message.contains("contxt_length: unknown field 'contxt_length'"))
            #expect(message.contains("context_length"), "lists the known fields")
        }

        @Test func unknownNestedFieldInAnAssemblyInput() throws {
            let message = try F.refusal(of: F.assemblyID) { m in
                var inputs = try #require(m["inputs"] as? [[String: Any]])
                inputs[0]["conector"] = inputs[0]["connector"]
                inputs[0]["connector"] = nil
                m["inputs"] = inputs
            }
            #expect(message.contains("inputs[0].conector: unknown field"))
        }

        @Test(arguments: [
            (F.llmID, "weights", "prefx"),
            (F.llmID, "tokenizer", "eos"),
            (F.encoderID, "preprocess", "resample"),
            (F.encoderID, "weights", "files_"),
        ])
        func unknownNestedFieldInAComponent(id: String, object: String, field: String) throws {
            let message = try F.refusal(of: id) { m in
                var inner = try #require(m[object] as? [String: Any])
                inner[field] = 1
                m[object] = inner
            }
            #expect(message.contains("\(object).\(field): unknown"))
        }

        @Test func wrongType() throws {
            let message = try F.refusal(of: F.llmID) { $0["context_length"] = "big" }
            #expect(message.contains("context_length: expected an integer"))
        }

        @Test func nonPositiveContextLength() throws {
            let message = try F.refusal(of: F.llmID) { $0["context_length"] = 0 }
            #expect(message.contains("context_length: must be positive"))
        }

        @Test(arguments: [
            (F.encoderID, "output", "encoders declare their output"),
            (F.encoderID, "modality", "encoders name their modality"),
            (F.encoderID, "weights", "only connectors may start without weights"),
            (F.llmID, "tokenizer", "language models name their tokenizer"),
            (F.llmID, "context_length", "language models declare context_length"),
            (F.llmID, "weights", "language models need weights"),
            (F.connectorID, "input_width", "connectors declare input_width"),
            (F.connectorID, "output_width", "connectors declare output_width"),
            (F.llmID, "id", ""),
            (F.llmID, "family", ""),
        ])
        func missingRequiredFieldPerKind(id: String, field: String, reason: String) throws {
            let message = try F.refusal(of: id) { m in
                #expect(m[field] != nil)
                m[field] = nil
            }
            #expect(message.contains("\(field): required field is missing"))
            if !reason.isEmpty { #expect(message.contains(reason)) }
        }

        /// Generation defaults are checked where they are read, named by their field (not by the
        /// command-line flag they stand in for), and belong to language models and assemblies only.
        @Test(arguments: [
            (F.assemblyID, #"{"top_k": -1}"#, "generation.top_k: must be >= 0 (0 keeps every token), found -1"),
            (F.assemblyID, #"{"top_p": 1.5}"#, "generation.top_p: must be in (0, 1], found 1.5"),
            (F.llmID, #"{"temperature": -1}"#, "generation.temperature: must be >= 0 and finite, found -1"),
            (F.llmID, #"{"temperature": 1e39}"#, "generation.temperature: must be >= 0 and finite, found inf"),
            (F.llmID, #"{"repetition_penalty": 0}"#, "generation.repetition_penalty: must be positive and finite, found 0"),
            (F.llmID, #"{"max_tokens": -2}"#, "generation.max_tokens: must be >= 0, found -2"),
            (F.llmID, #"{"do_sample": true}"#, "generation.do_sample: unknown field"),
            (F.encoderID, #"{"temperature": 0}"#, "generation: only language models take generation defaults"),
        ])
        func badGenerationDefaults(id: String, generation: String, expected: String) throws {
            let message = try F.refusal(of: id) { $0["generation"] = try JSONSerialization.jsonObject(with: Data(generation.utf8)) }
            #expect(message.contains(expected), "\(message)")
        }

        /// An assembly's defaults over its language model's, field by field.
        @Test func assemblyDefaultsOverTheLanguageModels() {
            let model = GenerationDefaults(maxTokens: 10, temperature: 1, topK: 50, repetitionPenalty: 1.2)
            let assembly = GenerationDefaults(temperature: 0, topP: 0.9)
            #expect(assembly.over(model) == GenerationDefaults(maxTokens: 10, temperature: 0, topK: 50, topP: 0.9, repetitionPenalty: 1.2))
            #expect(assembly.over(nil) == assembly)
        }

        @Test(arguments: [-3, 0])
        func badWidth(width: Int) throws {
            let message = try F.refusal(of: F.connectorID) { $0["input_width"] = width }
            #expect(message.contains(#"input_width: expected a positive integer or "auto""#))
        }

        @Test func widthStringOtherThanAuto() throws {
            let message = try F.refusal(of: F.connectorID) { $0["output_width"] = "automatic" }
            #expect(message.contains("output_width: expected a positive integer"))
        }

        /// A key given twice is refused, named by its path: JSON readers disagree on which counts.
        @Test func repeatedKeysAreRefused() throws {
            func repeated(_ json: String) -> String? { JSONKeyScanner.firstRepeatedKey(in: Data(json.utf8)) }
            #expect(repeated(#"{"a": 1, "b": {"c": [1, {"d": "x\"}", "d": 2}], "c2": 3}}"#) == "b.c[1].d")
            #expect(repeated(#"{"a": "\"a\"", "b": [[], {}, {"a": 1}], "c": {"a": {"a": null}}}"#) == nil)
            #expect(repeated(#"{"context_length": 128, "x": true, "context_length": 8}"#) == "context_length")
            let folder = try F.temporaryFolder()
            let url = try F.write(text: #"{"schema": "chimera.component/v1", "id": "x", "kind": "connector", "family": "mlp", "config": {"depth": 2, "depth": 3}}"#,
                                  to: folder, name: "x.component.json")
            #expect(F.loadError(url) == "\(url.path): config.depth: the key is given twice in its object", "\(F.loadError(url))")
        }

        @Test(arguments: ["", "my llm", "-x"])
        func badIDs(id: String) throws {
            for base in [F.llmID, F.assemblyID] {
                let message = try F.refusal(of: base) { $0["id"] = id }
                #expect(message.contains("id: ids are non-empty, hold no spaces and do not start with '-'"))
            }
        }

        @Test func emptyWeightFileList() throws {
            let message = try F.refusal(of: F.llmID) { $0["weights"] = ["files": [String]()] }
            #expect(message.contains("weights.files: lists no file"))
        }

        @Test func placeholderBoundTwice() throws {
            let message = try F.refusal(of: F.assemblyID) { m in
                let inputs = try #require(m["inputs"] as? [[String: Any]])
                m["inputs"] = inputs + inputs
            }
            #expect(message.contains("inputs: a placeholder is bound twice"))
        }

        @Test func badSelection() throws {
            let message = try F.refusal(of: F.assemblyID) { m in
                var inputs = try #require(m["inputs"] as? [[String: Any]])
                inputs[0]["select"] = "cls"
                m["inputs"] = inputs
            }
            #expect(message.contains(#"inputs[0].select: expected "patch""#))
        }

        @Test func configMustBeAnObject() throws {
            let message = try F.refusal(of: F.llmID) { $0["config"] = [1, 2] }
            #expect(message.contains("config: expected an object"))
        }
    }
}

// MARK: - Catalog: duplicate and unknown ids

extension ManifestTests {
    @Suite struct CatalogLookup {
        @Test func duplicateIDsAcrossTwoFoldersNameBothFiles() throws {
            let first = try F.temporaryFolder(), second = try F.temporaryFolder()
            let m = try F.relocatable(F.connectorID).merging(["id": "twin"]) { $1 }
            let a = try F.write(m, to: first, name: "a.component.json")
            let b = try F.write(m, to: second, name: "b.component.json")
            var catalog = Catalog()
            try catalog.load(directory: first)
            do {
                try catalog.load(directory: second)
                Issue.record("a duplicate id was accepted")
            } catch {
                let message = F.message(error)
                #expect(message.contains("duplicate id 'twin'"))
                #expect(message.contains(a.resolvingSymlinksInPath().path) || message.contains(a.path))
                #expect(message.contains(b.resolvingSymlinksInPath().path) || message.contains(b.path))
            }
        }

        @Test func theSameFolderTwiceIsReadOnce() throws {
            var catalog = try F.catalog()
            let count = catalog.components.count
            try catalog.load(directory: F.builtin)
            try catalog.load(directory: F.defaults)  // the same files, reached another way
            #expect(catalog.components.count == count)
        }

        @Test func anEmptyCatalogueSaysWhereManifestsComeFrom() throws {
            do {
                _ = try Catalog().assembly("chimera-tiny-default")
                Issue.record("an empty catalogue found an assembly")
            } catch {
                let message = F.message(error)
                #expect(message.contains("unknown assembly id 'chimera-tiny-default'") && message.contains("none are registered"))
                for place in ["CHIMERA_HOME", "--manifests", "CHIMERA_MANIFESTS"] { #expect(message.contains(place), "names \(place)") }
            }
        }

        @Test func unknownIDListsTheKnownOnes() throws {
            let catalog = try F.catalog()
            do {
                _ = try catalog.component("nope")
                Issue.record("an unknown id was found")
            } catch {
                let message = F.message(error)
                #expect(message.contains("unknown component id 'nope'"))
                for id in [F.encoderID, F.connectorID, F.llmID] { #expect(message.contains(id)) }
            }
            do {
                _ = try catalog.component("nope", kind: .encoder)
                Issue.record("an unknown id was found")
            } catch {
                let message = F.message(error)
                #expect(message.contains("unknown encoder id 'nope'") && message.contains(F.encoderID))
                #expect(!message.contains(F.llmID), "lists encoders only")
            }
            do {
                _ = try catalog.assembly("nope")
                Issue.record("an unknown assembly was found")
            } catch {
                #expect(F.message(error).contains(F.assemblyID))
                #expect(!F.message(error).contains("did you mean"), "nothing near 'nope'")
            }
            // A typo or a shortened id gets the ids it probably meant, before the whole list.
            for (typed, meant) in [("qwen2-05b", "'qwen2-0.5b'"), ("clip-vit-large", "'clip-vit-large-patch14-336'"),
                                   ("TinyLlama-1.1B-chat", "'tinyllama-1.1b-chat'")] {
                do {
                    _ = try catalog.component(typed)
                    Issue.record("'\(typed)' was found")
                } catch {
                    #expect(F.message(error).contains("unknown component id '\(typed)': did you mean \(meant)? (known: "), "\(F.message(error))")
                }
            }
            do {
                _ = try catalog.assembly("tinyllava-qwen2-05b-siglip")
                Issue.record("a mistyped assembly was found")
            } catch {
                #expect(F.message(error).contains("did you mean 'tinyllava-qwen2-0.5b-siglip'?"), "\(F.message(error))")
            }
            // An id far longer than any (a megabyte of it took minutes to compare) has no near ones.
            #expect(ManifestError.nearest(to: String(repeating: "y", count: 1_000_000), in: catalog.components.keys.sorted()).isEmpty)
            #expect(ManifestError.nearest(to: "qwen2-0.5b-siglip-extra-long-name", in: ["qwen2-0.5b"]).isEmpty)
        }

        @Test func anIDOfAnotherKindIsNotCalledUnknown() throws {
            let catalog = try F.catalog()
            do {
                _ = try catalog.component(F.connectorID, kind: .encoder)
                Issue.record("a connector was returned as an encoder")
            } catch {
                let message = F.message(error)
                #expect(message.contains("'\(F.connectorID)' is of kind connector, expected kind encoder"))
                #expect(message.contains("\(F.connectorID).component.json"))
            }
        }

        @Test func listFilters() throws {
            let catalog = try F.catalog()
            // Other built-in manifests may join the defaults: check the filters, not exact lists.
            let encoders = catalog.list(kind: .encoder)
            #expect(encoders.contains { $0.id == F.encoderID } && encoders.allSatisfy { $0.kind == .encoder })
            let images = catalog.list(modality: "image")
            #expect(images.contains { $0.id == F.encoderID } && images.allSatisfy { $0.modality == "image" })
            let llamas = catalog.list(family: "llama")
            #expect(llamas.contains { $0.id == F.llmID } && llamas.allSatisfy { $0.family == "llama" })
            #expect(catalog.list(kind: .connector, family: "clip-vision").isEmpty)
            let all = catalog.list().map(\.id)
            #expect(all == all.sorted() && all.count == catalog.components.count)
            #expect(Set(all).isSuperset(of: [F.llmID, F.connectorID, F.encoderID]))
        }

        @Test func brokenManifestInAFolderIsReportedNotSkipped() throws {
            let folder = try F.temporaryFolder()
            let url = try F.write(text: #"{"schema": "chimera.component/v1", "id": "x",, }"#, to: folder, name: "broken.json")
            var catalog = Catalog()
            do {
                try catalog.load(directory: folder)
                Issue.record("a broken manifest was skipped")
            } catch {
                #expect(F.message(error).contains(url.lastPathComponent))
            }
        }

        @Test func otherJSONFilesAreSkipped() throws {
            let folder = try F.temporaryFolder()
            try F.write(["hidden_size": 64], to: folder, name: "config.json")
            // A JSON Schema mentions the schema versions but is no manifest.
            try F.write(["$schema": "https://json-schema.org/draft/2020-12/schema",
                         "properties": ["schema": ["const": "chimera.component/v1"]]], to: folder, name: "x.schema.json")
            var catalog = Catalog()
            try catalog.load(directory: folder)
            #expect(catalog.components.isEmpty && catalog.assemblies.isEmpty)
        }
    }
}

// MARK: - Families and compatibility

extension ManifestTests {
    @Suite struct Compatibility {
        let families = BuiltinFamilies.registry()

        func makeChecker(_ catalog: Catalog? = nil) throws -> CompatibilityChecker {
            CompatibilityChecker(catalog: try catalog ?? F.catalog(), families: families)
        }

        @Test func shippedDefaultsLoadAndFit() throws {
            // The default folder on its own holds exactly the embedded default.
            var defaults = Catalog()
            try defaults.load(directory: F.defaults)
            #expect(Set(defaults.components.keys) == [F.encoderID, F.connectorID, F.llmID])
            #expect(Set(defaults.assemblies.keys) == [F.assemblyID])
            #expect(try makeChecker(defaults).problems(assembly: try defaults.assembly(F.assemblyID)) == [])
            // Within the whole built-in catalog too, and every built-in manifest is sound on its own.
            let catalog = try F.catalog()
            let checker = try makeChecker(catalog)
            #expect(checker.problems(assembly: try catalog.assembly(F.assemblyID)) == [])
            // The catalogue (manifests/catalog/) ships no weights (so no tokenizer files either):
            // that problem is allowed there, nothing else anywhere.
            func allowed(_ m: ComponentManifest, _ p: CompatibilityProblem) -> Bool {
                guard m.origin.contains("/manifests/catalog/") else { return false }
                if case .tokenizerMissing = p { return true }
                return false
            }
            for m in catalog.components.values { #expect(checker.problems(of: m).filter { !allowed(m, $0) } == [], "\(m.id)") }
            for a in catalog.assemblies.values where !a.origin.contains("/manifests/catalog/") {
                #expect(checker.problems(assembly: a) == [], "\(a.id)")
            }
            for id in [F.encoderID, F.connectorID, F.llmID] {
                #expect(try catalog.component(id).origin == F.defaults.appendingPathComponent("\(id).component.json").path)
            }
            let encoder = try catalog.component(F.encoderID)
            #expect(encoder.output == TokenContract(width: 64, tokens: 17, grid: [4, 4]))
            #expect(CompatibilityChecker.selectedTokens(encoder, select: .patch) == 16)
            #expect(CompatibilityChecker.selectedTokens(encoder, select: .full) == 17)
        }

        @Test func unknownFamily() throws {
            let folder = try F.temporaryFolder()
            let m = try F.component(F.relocatable(F.connectorID).merging(["family": "qformer"]) { $1 }, in: folder)
            #expect(try makeChecker().problems(of: m) == [.unknownFamily(id: m.id, family: "qformer")])
            do {
                _ = try families.build(m)
                Issue.record("an unknown family built")
            } catch {
                let message = F.message(error)
                #expect(message.contains("unknown connector family 'qformer'"))
                #expect(message.contains("mlp") && message.contains("linear"), "lists the known connector families")
                #expect(message.contains(m.origin))
            }
        }

        @Test func familyOfAnotherKind() throws {
            let folder = try F.temporaryFolder()
            let m = try F.component(F.relocatable(F.connectorID).merging(["family": "llama"]) { $1 }, in: folder)
            #expect(try makeChecker().problems(of: m) == [.wrongKind(id: m.id, expected: .languageModel, found: .connector)])
        }

        @Test(arguments: [
            ("kv_heads", "3", "config.kv_heads: heads 8 must be a multiple of kv_heads 3"),
            ("heads", "7", "config.kv_heads: heads 7 must be a multiple of kv_heads 4"),
            ("hidden_act", #""swiglu""#, "config.hidden_act: unsupported activation 'swiglu'"),
            ("kv_head", "4", "config.kv_head: unknown field"),
            ("vocab_size", #""615""#, "config.vocab_size: expected an integer"),
        ])
        func llamaConfigErrors(field: String, json: String, expected: String) throws {
            let value = try JSONSerialization.jsonObject(with: Data(json.utf8), options: .fragmentsAllowed)
            let folder = try F.temporaryFolder()
            var m = try F.relocatable(F.llmID)
            var config = try #require(m["config"] as? [String: Any])
            config[field] = value
            m["config"] = config
            let manifest = try F.component(m, in: folder, name: "llm.component.json")
            let problems = try makeChecker().problems(of: manifest)
            #expect(problems.count == 1)
            let text = problems.map(\.description).joined()
            #expect(text.contains(expected), "\(text)")
            #expect(text.contains(manifest.origin), "names the file")
            #expect(throws: ManifestError.self) { _ = try manifest.decodeConfig(LlamaConfig.self) }
        }

        @Test func missingLlamaConfigField() throws {
            let folder = try F.temporaryFolder()
            var m = try F.relocatable(F.llmID)
            var config = try #require(m["config"] as? [String: Any])
            config["hidden_size"] = nil
            m["config"] = config
            let manifest = try F.component(m, in: folder)
            let text = try makeChecker().problems(of: manifest).map(\.description).joined()
            #expect(text.contains("config.hidden_size: required field is missing"))
        }

        @Test(arguments: [
            ("heads", 5, "config.heads: hidden_size 64 is not divisible by heads 5"),
            ("patch_size", 80, "config.patch_size: image_size 64 is smaller than patch_size 80"),
        ])
        func clipConfigErrors(field: String, value: Int, expected: String) throws {
            let manifest = try F.component(try F.relocatable(F.encoderID) { $0[field] = value }, in: try F.temporaryFolder())
            let text = try makeChecker().problems(of: manifest).map(\.description).joined()
            #expect(text.contains(expected), "\(text)")
        }

        @Test func mlpConfigErrors() throws {
            let folder = try F.temporaryFolder()
            var m = try F.relocatable(F.connectorID)
            m["config"] = ["depth": 3, "layer_names": ["a", "b"]]
            let manifest = try F.component(m, in: folder)
            let text = try makeChecker().problems(of: manifest).map(\.description).joined()
            #expect(text.contains("config.layer_names: 2 names for 3 layers"), "\(text)")
        }

        @Test func encoderToConnectorWidthMismatch() throws {
            let folder = try F.temporaryFolder()
            let connector = try F.component(F.relocatable(F.connectorID).merging(["id": "wide", "input_width": 96]) { $1 }, in: folder)
            let catalog = try F.catalog()
            let checker = try makeChecker(catalog)
            let problems = checker.problems(encoder: try catalog.component(F.encoderID), connector: connector,
                                            languageModel: try catalog.component(F.llmID))
            #expect(problems == [.widthMismatch(from: F.encoderID, width: 64, to: "wide", expects: 96)])
            let text = problems[0].description
            #expect(text.contains("64") && text.contains("96") && text.contains(F.encoderID) && text.contains("wide"))
        }

        @Test func connectorToLanguageModelWidthMismatch() throws {
            let folder = try F.temporaryFolder()
            let connector = try F.component(F.relocatable(F.connectorID).merging(["id": "narrow", "output_width": 256]) { $1 }, in: folder)
            let catalog = try F.catalog()
            let problems = try makeChecker(catalog).problems(encoder: try catalog.component(F.encoderID), connector: connector,
                                                         languageModel: try catalog.component(F.llmID))
            #expect(problems == [.widthMismatch(from: "narrow", width: 256, to: F.llmID, expects: 128)])
            #expect(problems[0].description.contains("256") && problems[0].description.contains("128"))
        }

        @Test func tokensOverTheContext() throws {
            let folder = try F.temporaryFolder()
            try F.write(F.relocatable(F.llmID).merging(["id": "short-llm", "context_length": 8]) { $1 }, to: folder, name: "llm.component.json")
            var assembly = try F.shipped(F.assemblyID)
            assembly["id"] = "short"
            assembly["language_model"] = "short-llm"
            assembly["samples"] = nil
            try F.write(assembly, to: folder, name: "short.assembly.json")
            let catalog = try F.catalog(adding: [folder])
            let problems = try makeChecker(catalog).problems(assembly: try catalog.assembly("short"))
            #expect(problems == ["inputs[0]: token count 16 exceeds the context length 8 of 'short-llm'"])
            // Keeping the class token makes 17.
            let full = try makeChecker(catalog).problems(encoder: try catalog.component(F.encoderID), connector: try catalog.component(F.connectorID),
                                                     languageModel: try catalog.component("short-llm"), select: .full)
            #expect(full == [.tokensOverContext(tokens: 17, languageModel: "short-llm", context: 8)])
        }

        @Test func missingTokenizerFile() throws {
            let folder = try F.temporaryFolder()
            var m = try F.relocatable(F.llmID)
            m["tokenizer"] = ["file": "missing/tokenizer.json", "eos_token_ids": [2]]
            let manifest = try F.component(m, in: folder)
            let expected = folder.appendingPathComponent("missing/tokenizer.json").path
            #expect(try makeChecker().problems(of: manifest) == [.tokenizerMissing(languageModel: F.llmID, file: expected)])
            #expect(CompatibilityProblem.tokenizerMissing(languageModel: F.llmID, file: expected).description.contains(expected))
        }

        @Test func assemblyNamingAnUnknownOrWrongPart() throws {
            let catalog = try F.catalog()
            let checker = try makeChecker(catalog)
            let unknown = checker.problems(assembly: Assembler.assembly(id: "x", encoder: "nope", connector: F.connectorID, languageModel: F.llmID))
            #expect(unknown.count == 1 && unknown[0].hasPrefix("inputs[0]: unknown encoder id 'nope'"))
            let swapped = checker.problems(assembly: Assembler.assembly(id: "x", encoder: F.connectorID, connector: F.connectorID, languageModel: F.llmID))
            #expect(swapped.count == 1 && swapped[0].contains("is of kind connector"))
            let noLM = checker.problems(assembly: Assembler.assembly(id: "x", encoder: F.encoderID, connector: F.connectorID, languageModel: "nope"))
            #expect(noLM.count == 1 && noLM[0].contains("unknown language model id 'nope'"))
        }

        @Test func assemblerRefusesAMisfitWithAClearError() throws {
            let folder = try F.temporaryFolder()
            try F.write(F.relocatable(F.connectorID).merging(["id": "wide", "input_width": 96]) { $1 }, to: folder, name: "wide.component.json")
            let catalog = try F.catalog(adding: [folder])
            let assembly = Assembler.assembly(id: "misfit", encoder: F.encoderID, connector: "wide", languageModel: F.llmID)
            do {
                _ = try Assembler(catalog: catalog, families: families).build(assembly)
                Issue.record("a misfit was built")
            } catch {
                let message = F.message(error)
                #expect(message.contains("assembly 'misfit' does not fit together"))
                #expect(message.contains("produces width 64, 'wide' expects 96"))
            }
        }
    }
}

// MARK: - "auto" connectors: settled widths, seeded init

extension ManifestTests {
    @Suite struct AutoConnector {
        /// Writes an "auto" connector (no weights) with `seed` and an assembly around it; builds it.
        func build(seed: UInt64?, family: String = "mlp") throws -> AssembledModel {
            let folder = try F.temporaryFolder()
            var connector: [String: Any] = [
                "schema": "chimera.component/v1", "id": "fresh-projector", "kind": "connector", "family": family,
                "config": (family == "mlp" ? ["depth": 2, "activation": "gelu"] : [:]) as [String: Any],
                "input_width": "auto", "output_width": "auto",
            ]
            if let seed { connector["seed"] = Int(seed) }
            try F.write(connector, to: folder, name: "fresh.component.json")
            let assembly = Assembler.assembly(id: "fresh", encoder: F.encoderID, connector: "fresh-projector", languageModel: F.llmID)
            let catalog = try F.catalog(adding: [folder])
            let manifest = try catalog.component("fresh-projector")
            #expect(manifest.inputWidth == .auto && manifest.outputWidth == .auto && manifest.weights == nil)
            #expect(CompatibilityChecker(catalog: catalog, families: BuiltinFamilies.registry()).problems(assembly: assembly) == [])
            return try Assembler(catalog: catalog, families: BuiltinFamilies.registry()).build(assembly)
        }

        func weights(_ model: AssembledModel) -> [String: [Float]] {
            Dictionary(uniqueKeysWithValues: model.inputs[0].connector.parameters.map { ($0.name, $0.tensor.toArray()) })
        }

        @Test func autoWidthsAreSettledByTheAssembly() throws {
            let model = try build(seed: 7)
            let connector = model.inputs[0].connector
            #expect(connector.inputWidth == 64)
            #expect(connector.outputWidth == 128)
            let shapes = Dictionary(uniqueKeysWithValues: connector.parameters.map { ($0.name, $0.tensor.shape) })
            #expect(shapes == ["linear_1.weight": [128, 64], "linear_1.bias": [128], "linear_2.weight": [128, 128], "linear_2.bias": [128]])
            // The settled connector runs on the encoder's output.
            let out = try connector.forward(Tensor(zeros: [16, 64]))
            #expect(out.shape == [16, 128])
        }

        @Test func linearFamilyBuildsOneLayer() throws {
            let connector = try build(seed: 1, family: "linear").inputs[0].connector
            #expect(connector.parameters.map { $0.tensor.shape } == [[128, 64], [128]])
        }

        @Test func sameSeedSameWeightsOtherSeedOtherWeights() throws {
            let a = weights(try build(seed: 7)), b = weights(try build(seed: 7)), c = weights(try build(seed: 8))
            #expect(!a.isEmpty)
            #expect(a == b)
            #expect(a != c)
            for (name, values) in a { #expect(values != c[name], "\(name) differs with another seed") }
            #expect(a["linear_1.weight"]!.contains { $0 != 0 }, "initialized, not zeros")
        }

        @Test func autoConnectorCannotBuildAlone() throws {
            let folder = try F.temporaryFolder()
            let m = try F.component(["schema": "chimera.component/v1", "id": "lonely", "kind": "connector", "family": "mlp",
                                     "input_width": "auto", "output_width": 128], in: folder)
            do {
                _ = try BuiltinFamilies.registry().build(m)
                Issue.record("an auto-width connector built outside an assembly")
            } catch {
                #expect(F.message(error).contains(#"has width "auto""#))
            }
        }
    }
}
