import ChimeraPluginKit
import Foundation

public enum AudioEncoderPlugin: ChimeraPlugin {
    public static let name = "audio-encoder"
    public static let version = "0.1.0"
    public static var families: [(family: ComponentFamily, modality: String?)] {
        [
            (ComponentFamily(
                name: "whisper-encoder", kind: .encoder,
                summary: "Whisper audio encoder: 16 kHz WAV → log-mel → 2 convs → transformer (plugin)",
                validate: { manifest in
                    let config = try manifest.decodeConfig(WhisperEncoderConfig.self)
                    if let output = manifest.output, output.width != config.dModel || output.tokens != config.maxSourcePositions {
                        throw ManifestError.invalid(file: manifest.origin, detail:
                            "output: {width \(output.width), tokens \(output.tokens)} disagrees with config, which gives {width \(config.dModel), tokens \(config.maxSourcePositions)}")
                    }
                },
                create: { manifest, context in
                    guard let weights = context.weights else { throw PluginKitError("\(manifest.id): weights are required") }
                    return try WhisperAudioEncoder(manifest: manifest, weights: weights)
                }), "audio"),
            (ComponentFamily(
                name: "audio-pool-projector", kind: .connector,
                summary: "Qwen2-Audio-style projector: average pool then linear (plugin)",
                validate: { _ = try $0.decodeConfig(AudioProjectorConfig.self) },
                connectorTokens: { manifest, tokens in
                    (try? manifest.decodeConfig(AudioProjectorConfig.self)).flatMap { AudioProjector.tokens(tokens, pool: $0.pool) }
                },
                create: { manifest, context in try AudioProjector(manifest: manifest, context: context) }), nil),
        ]
    }
}

@_cdecl("chimera_plugin_entry")
public func chimeraPluginEntry() -> UnsafeRawPointer { PluginExport.table(AudioEncoderPlugin.self) }
