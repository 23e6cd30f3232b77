import ChimeraPluginKit
import Foundation

// An IoT time-series encoder as a run-time plugin. Multichannel readings (CSV with a header row of
// channel names, or JSON {"channel": [values]}) → per-channel normalization (each recording by its
// own mean and standard deviation, as PatchTST's RevIN does) → zero padding to `window` readings →
// patches of `patch_size` readings × all channels → linear patch embedding + learned positions →
// pre-norm transformer layers (Whisper's layout) → final layernorm. One token per patch.

// MARK: - Configuration

public struct SensorEncoderConfig: Codable, Sendable {
    /// Channel names, in the order the patch embedding expects them; input columns are matched by name.
    public var channels: [String]
    /// Readings per recording; shorter recordings are zero-padded after normalization, longer refused.
    public var window: Int
    public var patchSize: Int
    public var hiddenSize: Int
    public var layers: Int
    public var heads: Int
    public var intermediateSize: Int
    public var layerNormEps: Float
    public var hiddenAct: String
    /// Added to each channel's variance before the square root.
    public var normalizationEps: Float

    enum CodingKeys: String, CodingKey, CaseIterable {
        case channels, window, layers, heads
        case patchSize = "patch_size", hiddenSize = "hidden_size", intermediateSize = "intermediate_size"
        case layerNormEps = "layer_norm_eps", hiddenAct = "hidden_act", normalizationEps = "normalization_eps"
    }

    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        channels = try c.decode([String].self, forKey: .channels)
        window = try c.decode(Int.self, forKey: .window)
        patchSize = try c.decode(Int.self, forKey: .patchSize)
        hiddenSize = try c.decode(Int.self, forKey: .hiddenSize)
        layers = try c.decode(Int.self, forKey: .layers)
        heads = try c.decode(Int.self, forKey: .heads)
        intermediateSize = try c.decode(Int.self, forKey: .intermediateSize)
        layerNormEps = try c.decodeIfPresent(Float.self, forKey: .layerNormEps) ?? 1e-5
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "gelu"
        normalizationEps = try c.decodeIfPresent(Float.self, forKey: .normalizationEps) ?? 1e-5
        func check(_ ok: Bool, _ key: CodingKeys, _ message: String) throws {
            if !ok { throw DecodingError.dataCorrupted(.init(codingPath: [key], debugDescription: message)) }
        }
        try check(!channels.isEmpty && Set(channels).count == channels.count, .channels, "needs distinct channel names")
        for (value, key) in [(window, CodingKeys.window), (patchSize, .patchSize), (hiddenSize, .hiddenSize), (layers, .layers),
                             (heads, .heads), (intermediateSize, .intermediateSize)] {
            try check(value > 0, key, "must be positive, found \(value)")
        }
        try check(window % patchSize == 0, .patchSize, "window \(window) is not a multiple of patch_size \(patchSize)")
        try check(hiddenSize % heads == 0, .heads, "hidden_size \(hiddenSize) is not a multiple of heads \(heads)")
        try check(Activation(configName: hiddenAct) != nil, .hiddenAct, "unsupported activation '\(hiddenAct)'")
    }

    public var tokens: Int { window / patchSize }
}

// MARK: - Reading recordings

public enum SensorReadings {
    /// Columns of `config.channels` from a CSV (header row of names) or JSON ({"name": [numbers]}) file.
    public static func read(_ url: URL, channels: [String]) throws -> [[Float]] {
        guard let data = FileManager.default.contents(atPath: url.path) else { throw PluginKitError("\(url.path): cannot read the file") }
        let columns = url.pathExtension.lowercased() == "json" ? try json(data, file: url.path) : try csv(data, file: url.path)
        let missing = channels.filter { columns[$0] == nil }
        guard missing.isEmpty else {
            throw PluginKitError("\(url.path): missing channel\(missing.count == 1 ? "" : "s") \(missing.joined(separator: ", ")) (found: \(columns.keys.sorted().joined(separator: ", ")))")
        }
        let picked = channels.map { columns[$0]! }
        guard let length = picked.first?.count, picked.allSatisfy({ $0.count == length }) else {
            throw PluginKitError("\(url.path): channels have different lengths (\(zip(channels, picked).map { "\($0) \($1.count)" }.joined(separator: ", ")))")
        }
        return picked
    }

    static func csv(_ data: Data, file: String) throws -> [String: [Float]] {
        var text = String(decoding: data, as: UTF8.self)
        if text.hasPrefix("\u{FEFF}") { text.removeFirst() }  // a byte-order mark, as spreadsheets write it
        let lines = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard let header = lines.first else { throw PluginKitError("\(file): empty CSV (expected a header row of channel names)") }
        let names = header.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        for (i, name) in names.enumerated() {
            if let first = names[..<i].firstIndex(of: name) {
                throw PluginKitError("\(file): the header names column '\(name)' twice (columns \(first + 1) and \(i + 1))")
            }
        }
        var columns = [[Float]](repeating: [], count: names.count)
        for (row, line) in lines.dropFirst().enumerated() {
            let cells = line.split(separator: ",", omittingEmptySubsequences: false)
            guard cells.count == names.count else {
                throw PluginKitError("\(file): row \(row + 2) has \(cells.count) cells, the header names \(names.count)")
            }
            for (i, cell) in cells.enumerated() {
                guard let v = decimal(cell.trimmingCharacters(in: .whitespaces)) else {
                    throw PluginKitError("\(file): row \(row + 2), column '\(names[i])': '\(cell)' is not a finite number (decimal, as -1.5 or 2e-3)")
                }
                columns[i].append(v)
            }
        }
        return Dictionary(uniqueKeysWithValues: zip(names, columns))
    }

    /// A finite decimal number as CSV writers spell it (`-1.5`, `2e-3`): not the hexadecimal,
    /// `inf` or `nan` spellings that Swift's `Float(_:)` also takes.
    static func decimal(_ cell: String) -> Float? {
        guard !cell.isEmpty, cell.allSatisfy({ "0123456789+-.eE".contains($0) }), let v = Float(cell), v.isFinite else { return nil }
        return v
    }

    static func json(_ data: Data, file: String) throws -> [String: [Float]] {
        let object: [String: [Double]]
        do { object = try JSONDecoder().decode([String: [Double]].self, from: data) } catch let DecodingError.typeMismatch(_, context),
            let DecodingError.valueNotFound(_, context) {
            let path = context.codingPath
            let what = path.count >= 2 ? "channel '\(path[0].stringValue)', reading \(path[1].intValue ?? 0) is not a number"
                : path.count == 1 ? "channel '\(path[0].stringValue)' is not an array of numbers" : "the top level is not an object"
            throw PluginKitError("\(file): \(what) (expected a JSON object {\"channel\": [numbers], ...})")
        } catch {
            throw PluginKitError("\(file): not valid JSON (expected a JSON object {\"channel\": [numbers], ...})")
        }
        var out: [String: [Float]] = [:]
        for (name, numbers) in object {
            if let bad = numbers.firstIndex(where: { !Float($0).isFinite }) {
                throw PluginKitError("\(file): channel '\(name)', reading \(bad): \(numbers[bad]) is beyond a 32-bit float's range")
            }
            out[name] = numbers.map { Float($0) }
        }
        return out
    }

    /// [window, channels]: each channel minus its mean over std, then zeros after the last reading.
    public static func normalized(_ columns: [[Float]], window: Int, eps: Float, file: String) throws -> Tensor {
        let length = columns.first?.count ?? 0
        guard length > 0 else { throw PluginKitError("\(file): no readings") }
        guard length <= window else { throw PluginKitError("\(file): \(length) readings, the encoder takes at most \(window)") }
        let out = Tensor(zeros: [window, columns.count])
        for (c, column) in columns.enumerated() {
            let mean = column.reduce(0, +) / Float(length)
            let variance = column.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Float(length)
            let inverse = 1 / (variance + eps).squareRoot()
            for (t, v) in column.enumerated() { out.data[t * columns.count + c] = (v - mean) * inverse }
        }
        return out
    }
}

// MARK: - Encoder

public final class SensorEncoder: ModalityEncoder, @unchecked Sendable {
    public let manifest: ComponentManifest
    public let parameters: [(name: String, tensor: Tensor)]
    let config: SensorEncoderConfig
    let patchEmbedding: PluginLinear
    let positions: Tensor
    let layers: [PreNormEncoderLayer]
    let finalNorm: PluginLayerNorm

    public init(manifest: ComponentManifest, weights: ParameterLoader) throws {
        self.manifest = manifest
        let config = try manifest.decodeConfig(SensorEncoderConfig.self)
        self.config = config
        let h = config.hiddenSize
        patchEmbedding = try PluginLinear(weights, "patch_embedding", input: config.patchSize * config.channels.count, output: h)
        positions = try weights.tensor("embed_positions.weight", shape: [config.tokens, h])
        let activation = Activation(configName: config.hiddenAct)!
        layers = try PreNormEncoderLayer.stack(weights, count: config.layers, width: h, heads: config.heads,
                                               intermediate: config.intermediateSize, eps: config.layerNormEps, activation: activation)
        finalNorm = try PluginLayerNorm(weights, "layer_norm", width: h, eps: config.layerNormEps)
        parameters = weights.loaded
    }

    public var hiddenStateCount: Int { config.layers + 1 }
    public var output: TokenContract { TokenContract(width: config.hiddenSize, tokens: config.tokens) }

    public func prepareInput(contentsOf url: URL) throws -> Tensor {
        try SensorReadings.normalized(SensorReadings.read(url, channels: config.channels), window: config.window,
                                      eps: config.normalizationEps, file: url.path)
    }

    public func hiddenState(_ input: Tensor, layer: Int) throws -> Tensor {
        guard input.shape == [config.window, config.channels.count] else {
            throw PluginKitError("sensor encoder '\(id)': input \(input.shape), expected [\(config.window), \(config.channels.count)]")
        }
        // Consecutive rows of the [window, channels] input are one patch when viewed [tokens, patch × channels].
        let embeddings = patchEmbedding(input.reshaped([config.tokens, config.patchSize * config.channels.count]))
        addInPlace(embeddings, positions)
        let index = try hiddenStateIndex(layer, count: hiddenStateCount, component: "sensor encoder '\(id)'")
        return encoderHiddenState(embeddings, layers: layers, finalNorm: finalNorm, index: index)
    }
}

// MARK: - Export

public enum SensorEncoderPlugin: ChimeraPlugin {
    public static let name = "sensor-encoder"
    public static let version = "0.1.0"
    public static var families: [(family: ComponentFamily, modality: String?)] {
        [(.encoder(name: "sensor-patch-transformer",
                   summary: "multichannel time series → normalized patches → transformer encoder (plugin)",
                   config: SensorEncoderConfig.self, output: { TokenContract(width: $0.hiddenSize, tokens: $0.tokens) },
                   create: SensorEncoder.init), "sensor")]
    }
}

@_cdecl("chimera_plugin_entry")
public func chimeraPluginEntry() -> UnsafeRawPointer { PluginExport.table(SensorEncoderPlugin.self) }
