import ArgumentParser
import Chimera
import ChimeraComponents
import ChimeraTensor
import Foundation

struct Perplexity: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure a language model's perplexity over a text (what quantizing or fine-tuning cost it).",
        discussion: """
            The text is tokenized as a prompt is (special tokens added) and cut into windows of --window tokens \
            (the last one shorter); each window runs from an empty cache and scores every token but its first \
            by its negative log-likelihood, as transformers' model(ids, labels=ids).loss does; with --stride shorter \
            than the window, windows start every --stride tokens and score only what no earlier window scored \
            (transformers' strided evaluation). The perplexity is exp of the mean over all predictions. Prints the perplexity (JSON with --json); progress on stderr.
            """)
    @OptionGroup var catalogOptions: CatalogOptions
    @Option(help: "Assembly or language-model manifest file, or id (its language model is measured)") var assembly: String?
    @Option(help: "Language model id (instead of --assembly)") var llm: String?
    @Option(help: "The text's file ('-' reads stdin)") var textFile: String
    @Option(parsing: .unconditional, help: "Tokens a window (default: the context length, at most 1024)") var window: Int?
    @Option(parsing: .unconditional, help: "Start a window every N tokens (default: the window, no overlap); a shorter stride scores each token once, with more context")
    var stride: Int?
    @Option(parsing: .unconditional, help: "Score only the first N windows") var maxWindows: Int?
    @Option(help: "KV cache precision: f32, or f16") var kvCache = KVPrecision.f32
    @Flag(help: "Print one JSON object") var json = false
    @OptionGroup var placement: WeightPlacementOptions
    @OptionGroup var threading: ThreadOptions

    func validate() throws {
        if let maxWindows, maxWindows < 1 { throw ValidationError("--max-windows must be 1 or more, found \(maxWindows)") }
        if assembly != nil && llm != nil { throw ValidationError("give --assembly or --llm, not both") }
    }

    func run() throws {
        do {
            threading.apply()
            // --llm, or an assembly's language model: only it is built (an assembly's encoders are not needed).
            let (catalog, languageModel) = try llm.map { (try catalogOptions.catalog(), $0) }
                ?? { let (catalog, found) = try resolveAssembly(assembly, catalogOptions: catalogOptions); return (catalog, found.languageModel) }()
            let text = try readText(textFile, flag: "--text-file")
            // Before loading, which can take a while: a window the context cannot hold.
            if let context = try catalog.component(languageModel, kind: .languageModel).contextLength {
                _ = try perplexityWindow(window, stride: stride, context: context)
            }
            let manifest = Assembler.textOnly(languageModel)
            var assembler = Assembler(catalog: catalog, families: catalogOptions.families(), progress: progress)
            assembler.storedMatrices = placement.storedMatrices
            let model = try assembler.build(manifest)
            let result = try model.perplexity(of: text, window: window, stride: stride, maxWindows: maxWindows, kvCache: kvCache) { done, total in
                progress("window \(done)/\(total)")
            }
            if json {
                struct Output: Encodable { let languageModel: String; let result: PerplexityResult
                    enum CodingKeys: String, CodingKey { case languageModel = "language_model" }
                    func encode(to encoder: Encoder) throws {
                        try result.encode(to: encoder)
                        var c = encoder.container(keyedBy: CodingKeys.self)
                        try c.encode(languageModel, forKey: .languageModel)
                    }
                }
                try printJSON(Output(languageModel: manifest.languageModel, result: result))
            } else {
                let windows = result.windows == 1 ? "1 window" : "\(result.windows) windows"
                print(String(format: "perplexity %.4f (mean NLL %.5f nats over %d predictions: ", result.perplexity, result.meanNLL, result.predictions)
                      + "\(windows) of at most \(result.window) tokens" + (result.stride < result.window ? " every \(result.stride)" : "")
                      + " holding \(result.windowTokens) of the text's \(result.textTokens); "
                      + String(format: "%.1f tokens/s)", result.tokensPerSecond))
            }
        } catch let error as ValidationError { throw error } catch { throw fail(error) }
    }
}
