import ChimeraPluginKit
import Foundation

// A Whisper-style audio encoder as a run-time plugin (transformers WhisperFeatureExtractor +
// WhisperEncoder). 16 kHz mono WAV (PCM 8–32-bit or float) → samples in [-1, 1) → zero-padded at the end to the
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
    /// A WAV file's sample format: PCM integers (8-bit unsigned, 16/24/32-bit signed) or IEEE floats
    /// (32/64-bit), plain or as WAVE_FORMAT_EXTENSIBLE.
    struct Format { var float: Bool; var channels: Int; var rate: Int; var bits: Int }

    /// The data chunk size streaming writers (ffmpeg to a pipe) leave when the length is unknown.
    static let unknownLength = 0xFFFF_FFFF

    /// Mono samples scaled to [-1, 1) as soundfile/librosa read them: integers ÷ 2^(bits − 1)
    /// (8-bit ones first centred at 128), floats as stored.
    public static func read(_ url: URL, rate expectedRate: Int) throws -> [Float] {
        guard let data = FileManager.default.contents(atPath: url.path) else { throw PluginKitError("\(url.path): cannot read the file") }
        let bytes = [UInt8](data), file = url.path
        func u32(_ i: Int) -> Int { Int(bytes[i]) | Int(bytes[i + 1]) << 8 | Int(bytes[i + 2]) << 16 | Int(bytes[i + 3]) << 24 }
        func u16(_ i: Int) -> Int { Int(bytes[i]) | Int(bytes[i + 1]) << 8 }
        guard bytes.count >= 12, bytes[0..<4] == [82, 73, 70, 70], bytes[8..<12] == [87, 65, 86, 69] else {
            throw PluginKitError("\(file): not a RIFF/WAVE file")
        }
        var offset = 12
        var format: Format?
        while offset + 8 <= bytes.count {
            let id = String(decoding: bytes[offset..<offset + 4], as: UTF8.self), size = u32(offset + 4)
            let body = offset + 8
            if id == "data" {
                guard let f = format else { throw PluginKitError("\(file): data chunk before the fmt chunk") }
                guard f.channels == 1 else { throw PluginKitError("\(file): \(f.channels) channels; only mono is supported (mix it down first)") }
                guard f.rate == expectedRate else {
                    throw PluginKitError("\(file): sample rate \(f.rate) Hz; this encoder takes \(expectedRate) Hz and does not resample (e.g. `ffmpeg -i in.wav -ar \(expectedRate) -ac 1 out.wav`)")
                }
                let available = bytes.count - body
                guard size <= available || size == unknownLength else {
                    throw PluginKitError("\(file): the data chunk claims \(size) bytes but the file holds \(available) after its start (a truncated file?)")
                }
                let width = f.bits / 8, count = min(size, available) / width
                guard count > 0 else { throw PluginKitError("\(file): the data chunk holds no samples") }
                return try samples(bytes, from: body, count: count, format: f, file: file)
            }
            guard body + size <= bytes.count else { throw PluginKitError("\(file): chunk '\(id)' runs past the end of the file") }
            if id == "fmt " { format = try parseFormat(bytes, body: body, size: size, file: file) }
            offset = body + size + (size & 1)
        }
        throw PluginKitError("\(file): no data chunk")
    }

    static func parseFormat(_ bytes: [UInt8], body: Int, size: Int, file: String) throws -> Format {
        func u16(_ i: Int) -> Int { Int(bytes[i]) | Int(bytes[i + 1]) << 8 }
        func u32(_ i: Int) -> Int { u16(i) | u16(i + 2) << 16 }
        guard size >= 16 else { throw PluginKitError("\(file): fmt chunk of \(size) bytes (expected at least 16)") }
        var tag = u16(body)
        let channels = u16(body + 2), rate = u32(body + 4), blockAlign = u16(body + 12), bits = u16(body + 14)
        if tag == 0xFFFE {  // WAVE_FORMAT_EXTENSIBLE: the real tag opens the sub-format GUID
            // The rest of a KSDATAFORMAT_SUBTYPE_* GUID: 0000xxxx-0000-0010-8000-00aa00389b71.
            let suffix: [UInt8] = [0, 0, 0, 0, 0x10, 0, 0x80, 0, 0, 0xAA, 0, 0x38, 0x9B, 0x71]
            guard size >= 40, Array(bytes[body + 26..<body + 40]) == suffix else {
                throw PluginKitError("\(file): WAVE_FORMAT_EXTENSIBLE with a sub-format other than PCM or IEEE float")
            }
            tag = u16(body + 24)
        }
        let supported: [Int: Set<Int>] = [1: [8, 16, 24, 32], 3: [32, 64]]
        guard let widths = supported[tag], widths.contains(bits) else {
            throw PluginKitError("\(file): format \(tag) with \(bits)-bit samples; supported are PCM (format 1) with 8, 16, 24 or 32-bit samples and IEEE float (format 3) with 32 or 64-bit ones")
        }
        guard channels > 0, blockAlign == channels * bits / 8 else {
            throw PluginKitError("\(file): block align \(blockAlign) does not match \(channels) channel(s) of \(bits)-bit samples")
        }
        return Format(float: tag == 3, channels: channels, rate: rate, bits: bits)
    }

    static func samples(_ bytes: [UInt8], from start: Int, count: Int, format: Format, file: String) throws -> [Float] {
        let width = format.bits / 8
        var out = [Float](repeating: 0, count: count)
        for i in 0..<count {
            var raw: UInt64 = 0
            for b in 0..<width { raw |= UInt64(bytes[start + i * width + b]) << (8 * b) }
            let value: Double
            switch (format.float, width) {
            case (true, 4): value = Double(Float(bitPattern: UInt32(raw)))
            case (true, _): value = Double(bitPattern: raw)
            case (false, 1): value = (Double(raw) - 128) / 128
            default:
                // Sign-extend the top bit of a `width`-byte integer.
                let shift = UInt64(64 - 8 * width)
                value = Double(Int64(bitPattern: raw << shift) >> Int64(shift)) / Double(1 << (8 * width - 1))
            }
            guard value.isFinite else { throw PluginKitError("\(file): sample \(i) is not a finite number (\(value))") }
            out[i] = Float(value)
        }
        return out
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
