import ChimeraPluginKit
import Foundation

public enum AudioEncoderPlugin: ChimeraPlugin {
    public static let name = "audio-encoder"
    public static let version = "0.1.0"
    public static var families: [(family: ComponentFamily, modality: String?)] {
        [
            (.encoder(name: "whisper-encoder",
                      summary: "Whisper audio encoder: 16 kHz WAV → log-mel → 2 convs → transformer (plugin)",
                      config: WhisperEncoderConfig.self, output: { TokenContract(width: $0.dModel, tokens: $0.maxSourcePositions) },
                      create: WhisperAudioEncoder.init), "audio"),
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
