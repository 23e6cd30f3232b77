import Chimera
import ChimeraTensor
import Foundation

/// Qwen2 / Qwen2.5, as transformers' Qwen2ForCausalLM: Llama with q/k/v biases (no o bias),
/// usually theta 1e6 and, on small models, tied embeddings.
public struct Qwen2Config: DecoderFamilyConfig {
    public var shape: DecoderShape
    public var rmsNormEps: Float
    public var hiddenAct: String
    /// Attention window of sliding-window layers (nil: every layer attends to the whole context).
    public var slidingWindow: Int?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case rmsNormEps = "rms_norm_eps", hiddenAct = "hidden_act", slidingWindow = "sliding_window"
    }

    public init(from decoder: Decoder) throws {
        shape = try DecoderShape(from: decoder, familyKeys: CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decodeIfPresent(Float.self, forKey: .rmsNormEps) ?? 1e-6
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        slidingWindow = try c.decodeIfPresent(Int.self, forKey: .slidingWindow)
        _ = try activation(hiddenAct, CodingKeys.hiddenAct)
        try require((slidingWindow ?? 1) > 0, CodingKeys.slidingWindow, "must be positive, found \(slidingWindow ?? 0)")
    }

    public func architecture(for manifest: ComponentManifest) throws -> DecoderArchitecture {
        // A window at least as long as the context never masks anything; a shorter one is not implemented.
        let context = manifest.contextLength ?? 2048
        if let window = slidingWindow, window < context {
            throw ManifestError.invalid(file: manifest.originFile, detail:
                "config.sliding_window: sliding-window attention (window \(window) < context_length \(context)) is not implemented; set context_length to at most \(window)")
        }
        var a = try shape.architecture(norm: .rms(weightOffset: 0), normEps: rmsNormEps, mlp: .gated(try activation(hiddenAct, CodingKeys.hiddenAct)))
        a.qkvBias = true
        return a
    }
}
