import ChimeraPluginKit
import Foundation

// A Whisper-style audio encoder as a run-time plugin (transformers WhisperFeatureExtractor +
// WhisperEncoder). 16 kHz mono 16-bit PCM WAV → samples / 32768 → zero-padded at the end to the
// chunk (chunk_length s, as Whisper's padding="max_length"; longer clips are refused, not cut) →
// log-mel spectrogram (periodic Hann window of n_fft, hop, centered frames with reflect padding,
// power 2, Slaney mel filters 0–8 kHz, log10 with floor 1e-10, clamp to max − 8, (x + 4) / 4,
// last frame dropped) → conv1d(k3, p1) + GELU → conv1d(k3, s2, p1) + GELU → + sinusoidal
// positions → pre-norm layers → final layernorm.

// MARK: - Configuration

public struct WhisperEncoderConfig: Codable, Sendable {
    public var numMelBins: Int
    public var dModel: Int
    public var encoderLayers: Int
    public var encoderAttentionHeads: Int
    public var encoderFFNDim: Int
    /// Encoder tokens per chunk: chunk_length · sampling_rate / hop_length / 2 (1500 for 30 s).
    public var maxSourcePositions: Int
    public var activationFunction: String
    public var chunkLength: Int
    public var samplingRate: Int
    public var nFFT: Int
    public var hopLength: Int

    enum CodingKeys: String, CodingKey, CaseIterable {
        case numMelBins = "num_mel_bins", dModel = "d_model", encoderLayers = "encoder_layers"
        case encoderAttentionHeads = "encoder_attention_heads", encoderFFNDim = "encoder_ffn_dim"
        case maxSourcePositions = "max_source_positions", activationFunction = "activation_function"
        case chunkLength = "chunk_length", samplingRate = "sampling_rate", nFFT = "n_fft", hopLength = "hop_length"
    }

    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        numMelBins = try c.decode(Int.self, forKey: .numMelBins)
        dModel = try c.decode(Int.self, forKey: .dModel)
        encoderLayers = try c.decode(Int.self, forKey: .encoderLayers)
        encoderAttentionHeads = try c.decode(Int.self, forKey: .encoderAttentionHeads)
        encoderFFNDim = try c.decode(Int.self, forKey: .encoderFFNDim)
        maxSourcePositions = try c.decodeIfPresent(Int.self, forKey: .maxSourcePositions) ?? 1500
        activationFunction = try c.decodeIfPresent(String.self, forKey: .activationFunction) ?? "gelu"
        chunkLength = try c.decodeIfPresent(Int.self, forKey: .chunkLength) ?? 30
        samplingRate = try c.decodeIfPresent(Int.self, forKey: .samplingRate) ?? 16000
        nFFT = try c.decodeIfPresent(Int.self, forKey: .nFFT) ?? 400
        hopLength = try c.decodeIfPresent(Int.self, forKey: .hopLength) ?? 160
        func check(_ ok: Bool, _ key: CodingKeys, _ message: String) throws {
            if !ok { throw DecodingError.dataCorrupted(.init(codingPath: [key], debugDescription: message)) }
        }
        for (value, key) in [(numMelBins, CodingKeys.numMelBins), (dModel, .dModel), (encoderLayers, .encoderLayers),
                             (encoderAttentionHeads, .encoderAttentionHeads), (encoderFFNDim, .encoderFFNDim),
                             (maxSourcePositions, .maxSourcePositions), (chunkLength, .chunkLength), (nFFT, .nFFT), (hopLength, .hopLength)] {
            try check(value > 0, key, "must be positive, found \(value)")
        }
        try check(samplingRate == 16000, .samplingRate, "only 16000 Hz is supported (Whisper's rate), found \(samplingRate)")
        try check(dModel % encoderAttentionHeads == 0 && dModel % 2 == 0, .encoderAttentionHeads,
                  "d_model \(dModel) must be even and a multiple of the heads \(encoderAttentionHeads)")
        try check(frames == 2 * maxSourcePositions, .maxSourcePositions,
                  "chunk_length \(chunkLength) s gives \(frames) frames, which conv2 (stride 2) turns into \(frames / 2) tokens, not max_source_positions \(maxSourcePositions)")
        try check(Activation(configName: activationFunction) != nil, .activationFunction, "unsupported activation '\(activationFunction)'")
    }

    public var samples: Int { chunkLength * samplingRate }
    public var frames: Int { samples / hopLength }
}

// MARK: - Audio files and features

public enum WAV {
    /// Mono 16-bit PCM samples scaled to [-1, 1) (÷ 32768, as soundfile/librosa read them).
    public static func read(_ url: URL, rate expectedRate: Int) throws -> [Float] {
        guard let data = FileManager.default.contents(atPath: url.path) else { throw PluginKitError("\(url.path): cannot read the file") }
        let bytes = [UInt8](data)
        func u32(_ i: Int) -> Int { Int(bytes[i]) | Int(bytes[i + 1]) << 8 | Int(bytes[i + 2]) << 16 | Int(bytes[i + 3]) << 24 }
        func u16(_ i: Int) -> Int { Int(bytes[i]) | Int(bytes[i + 1]) << 8 }
        guard bytes.count >= 12, bytes[0..<4] == [82, 73, 70, 70], bytes[8..<12] == [87, 65, 86, 69] else {
            throw PluginKitError("\(url.path): not a RIFF/WAVE file")
        }
        var offset = 12
        var format: (tag: Int, channels: Int, rate: Int, bits: Int)?
        while offset + 8 <= bytes.count {
            let id = String(decoding: bytes[offset..<offset + 4], as: UTF8.self), size = u32(offset + 4)
            let body = offset + 8
            guard body + size <= bytes.count || id == "data" else { throw PluginKitError("\(url.path): chunk '\(id)' runs past the end of the file") }
            if id == "fmt " {
                guard size >= 16 else { throw PluginKitError("\(url.path): fmt chunk of \(size) bytes") }
                format = (u16(body), u16(body + 2), u32(body + 4), u16(body + 14))
            } else if id == "data" {
                guard let f = format else { throw PluginKitError("\(url.path): data chunk before the fmt chunk") }
                guard f.tag == 1, f.bits == 16 else {
                    throw PluginKitError("\(url.path): format \(f.tag) with \(f.bits)-bit samples; only 16-bit PCM (format 1) is supported")
                }
                guard f.channels == 1 else { throw PluginKitError("\(url.path): \(f.channels) channels; only mono is supported (mix it down first)") }
                guard f.rate == expectedRate else {
                    throw PluginKitError("\(url.path): sample rate \(f.rate) Hz; this encoder takes \(expectedRate) Hz and does not resample (e.g. `ffmpeg -i in.wav -ar \(expectedRate) -ac 1 out.wav`)")
                }
                let count = min(size, bytes.count - body) / 2
                return (0..<count).map { Float(Int16(bitPattern: UInt16(u16(body + 2 * $0)))) / 32768 }
            }
            offset = body + size + (size & 1)
        }
        throw PluginKitError("\(url.path): no data chunk")
    }
}

/// transformers' WhisperFeatureExtractor (numpy path), in Double like numpy.
public struct LogMelSpectrogram: Sendable {
    let config: WhisperEncoderConfig
    /// [bins, mels], Slaney-normalized triangles on the Slaney mel scale.
    let filters: [Double]
    let window: [Double]
    let bins: Int

    public init(config: WhisperEncoderConfig) {
        self.config = config
        let n = config.nFFT
        bins = n / 2 + 1
        window = (0..<n).map { 0.5 - 0.5 * cos(2 * Double.pi * Double($0) / Double(n)) }  // periodic Hann
        filters = Self.melFilters(bins: bins, mels: config.numMelBins, rate: Double(config.samplingRate), maxFrequency: 8000)
    }

    static func hertzToMel(_ f: Double) -> Double {
        f < 1000 ? 3 * f / 200 : 15 + log(f / 1000) * 27 / log(6.4)
    }
    static func melToHertz(_ m: Double) -> Double {
        m < 15 ? 200 * m / 3 : 1000 * exp(log(6.4) / 27 * (m - 15))
    }

    static func melFilters(bins: Int, mels: Int, rate: Double, maxFrequency: Double) -> [Double] {
        let low = hertzToMel(0), high = hertzToMel(maxFrequency)
        let edges = (0..<(mels + 2)).map { melToHertz(low + (high - low) * Double($0) / Double(mels + 1)) }
        let fft = (0..<bins).map { rate / 2 * Double($0) / Double(bins - 1) }
        var out = [Double](repeating: 0, count: bins * mels)
        for m in 0..<mels {
            let norm = 2 / (edges[m + 2] - edges[m])
            for k in 0..<bins {
                let down = (fft[k] - edges[m]) / (edges[m + 1] - edges[m])
                let up = (edges[m + 2] - fft[k]) / (edges[m + 2] - edges[m + 1])
                out[k * mels + m] = max(0, min(down, up)) * norm
            }
        }
        return out
    }

    /// [mels, frames] features of a clip of at most one chunk.
    public func callAsFunction(_ clip: [Float], file: String) throws -> Tensor {
        guard clip.count <= config.samples else {
            throw PluginKitError("\(file): \(Double(clip.count) / Double(config.samplingRate)) s of audio; this encoder takes at most \(config.chunkLength) s")
        }
        let n = config.nFFT, hop = config.hopLength, half = n / 2, mels = config.numMelBins, frames = config.frames
        var x = clip.map(Double.init) + [Double](repeating: 0, count: config.samples - clip.count)
        // Centered frames: reflect-pad n/2 on both sides (numpy's "reflect" excludes the edge sample).
        x = (1...half).reversed().map { x[$0] } + x + (1...half).map { x[x.count - 1 - $0] }
        var cosines = [Double](repeating: 0, count: bins * n), sines = cosines
        for k in 0..<bins {
            for t in 0..<n {
                let angle = 2 * Double.pi * Double((k * t) % n) / Double(n)
                cosines[k * n + t] = cos(angle); sines[k * n + t] = sin(angle)
            }
        }
        var logMel = [Double](repeating: 0, count: mels * frames)
        var frame = [Double](repeating: 0, count: n), power = [Double](repeating: 0, count: bins)
        for f in 0..<frames {
            for t in 0..<n { frame[t] = x[f * hop + t] * window[t] }
            for k in 0..<bins {
                var re = 0.0, im = 0.0
                for t in 0..<n { re += frame[t] * cosines[k * n + t]; im += frame[t] * sines[k * n + t] }
                power[k] = re * re + im * im
            }
            for m in 0..<mels {
                var e = 0.0
                for k in 0..<bins { e += filters[k * mels + m] * power[k] }
                logMel[m * frames + f] = log10(max(e, 1e-10))
            }
        }
        let ceiling = logMel.max()! - 8
        return Tensor(shape: [mels, frames], values: logMel.map { Float((max($0, ceiling) + 4) / 4) })
    }
}

// MARK: - Encoder

/// nn.Conv1d over time-major input [L, Cin] → [Lout, Cout], as im2col + one matrix product.
struct Conv1D: Sendable {
    let weight: Tensor  // [Cout, Cin · K]
    let bias: Tensor
    let kernel: Int, stride: Int, padding: Int

    init(_ loader: ParameterLoader, _ name: String, input: Int, output: Int, kernel: Int, stride: Int, padding: Int) throws {
        weight = try loader.tensor(name + ".weight", shape: [output, input, kernel]).reshaped([output, input * kernel])
        bias = try loader.tensor(name + ".bias", shape: [output])
        self.kernel = kernel; self.stride = stride; self.padding = padding
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        let length = x.rows, channels = x.columns
        let outLength = (length + 2 * padding - kernel) / stride + 1
        let columns = Tensor(zeros: [outLength, channels * kernel])
        for t in 0..<outLength {
            for j in 0..<kernel {
                let source = t * stride + j - padding
                guard source >= 0, source < length else { continue }
                for c in 0..<channels { columns.data[t * channels * kernel + c * kernel + j] = x.data[source * channels + c] }
            }
        }
        return linear(columns, weight: weight, bias: bias)
    }
}

public final class WhisperAudioEncoder: ModalityEncoder, @unchecked Sendable {
    public let manifest: ComponentManifest
    public let parameters: [(name: String, tensor: Tensor)]
    let config: WhisperEncoderConfig
    let features: LogMelSpectrogram
    let conv1, conv2: Conv1D
    let positions: Tensor
    let layers: [PreNormEncoderLayer]
    let finalNorm: PluginLayerNorm
    let activation: Activation

    public init(manifest: ComponentManifest, weights: ParameterLoader) throws {
        self.manifest = manifest
        let config = try manifest.decodeConfig(WhisperEncoderConfig.self)
        self.config = config
        let d = config.dModel
        let activation = Activation(configName: config.activationFunction)!
        self.activation = activation
        features = LogMelSpectrogram(config: config)
        conv1 = try Conv1D(weights, "conv1", input: config.numMelBins, output: d, kernel: 3, stride: 1, padding: 1)
        conv2 = try Conv1D(weights, "conv2", input: d, output: d, kernel: 3, stride: 2, padding: 1)
        // Whisper's positions are fixed sinusoids; a checkpoint that stores them is used as stored.
        positions = try weights.tensorIfPresent("embed_positions.weight", shape: [config.maxSourcePositions, d])
            ?? Self.sinusoids(length: config.maxSourcePositions, channels: d)
        layers = try PreNormEncoderLayer.stack(weights, count: config.encoderLayers, width: d, heads: config.encoderAttentionHeads,
                                               intermediate: config.encoderFFNDim, eps: 1e-5, activation: activation)
        finalNorm = try PluginLayerNorm(weights, "layer_norm", width: d, eps: 1e-5)
        parameters = weights.loaded
    }

    /// [sin(t · e^(−i·ln(10⁴)/(C/2−1))), cos(...)] for i < C/2, as Whisper's `sinusoids`.
    static func sinusoids(length: Int, channels: Int) -> Tensor {
        let half = channels / 2, increment = log(10000.0) / Double(half - 1)
        let out = Tensor(zeros: [length, channels])
        for t in 0..<length {
            for i in 0..<half {
                let angle = Double(t) * exp(-increment * Double(i))
                out.data[t * channels + i] = Float(sin(angle)); out.data[t * channels + half + i] = Float(cos(angle))
            }
        }
        return out
    }

    public var hiddenStateCount: Int { config.encoderLayers + 1 }
    public var output: TokenContract { TokenContract(width: config.dModel, tokens: config.maxSourcePositions) }

    public func prepareInput(contentsOf url: URL) throws -> Tensor {
        try features(WAV.read(url, rate: config.samplingRate), file: url.path)
    }

    public func hiddenState(_ input: Tensor, layer: Int) throws -> Tensor {
        guard input.shape == [config.numMelBins, config.frames] else {
            throw PluginKitError("audio encoder '\(id)': features \(input.shape), expected [\(config.numMelBins), \(config.frames)]")
        }
        let index = try hiddenStateIndex(layer, count: hiddenStateCount, component: "audio encoder '\(id)'")
        // Time-major [frames, mels] for the convolutions.
        let timeMajor = Tensor(zeros: [config.frames, config.numMelBins])
        for m in 0..<config.numMelBins { for f in 0..<config.frames { timeMajor.data[f * config.numMelBins + m] = input.data[m * config.frames + f] } }
        let embeddings = activate(conv2(activate(conv1(timeMajor), activation)), activation)
        addInPlace(embeddings, positions)
        return encoderHiddenState(embeddings, layers: layers, finalNorm: finalNorm, index: index)
    }
}
