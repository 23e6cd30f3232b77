import Chimera
import ChimeraTensor
import Foundation

/// Maps a Hugging Face text config (the config.json of a *ForCausalLM, or a LLaVA `text_config`)
/// to a language-model component manifest: family, family config and context length. Weights and
/// tokenizer are the caller's to fill in.
public enum LanguageModelImport {
    /// transformers model_type → Chimera family, looked up exactly.
    public static let families: [String: String] = [
        "llama": "llama", "qwen2": "qwen2", "gemma": "gemma", "phi": "phi", "stablelm": "stablelm",
    ]
    public static var supportedModelTypes: [String] { families.keys.sorted() }
    static let booleanKeys: Set = ["attention_bias", "mlp_bias", "qk_layernorm", "use_qkv_bias", "use_parallel_residual"]

    /// - Parameters:
    ///   - text: the config dictionary.
    ///   - section: how errors name it ("text_config" inside a LLaVA config, "" for a standalone config.json).
    ///   - file: the config file, for errors.
    ///   - tiedAtTop: tie_word_embeddings of the enclosing config, used when `text` does not say.
    ///   - transformersVersion: major version of transformers that saved a LLaVA config. Gemma under
    ///     transformers 5 leaves spliced image features unscaled, under 4 it scales them; nil keeps
    ///     the family default (scaled, as TinyLLaVA-Gemma was trained).
    public static func manifest(id: String, text: [String: Any], section: String, file: String,
                                tiedAtTop: Bool? = nil, transformersVersion: Int? = nil) throws -> ComponentManifest {
        let modelType = text["model_type"] as? String ?? "(none)"
        guard let family = families[modelType] else {
            throw ImportError.unsupported(file: file, field: section.isEmpty ? "model_type" : "\(section).model_type", found: "\"\(modelType)\"",
                                          supported: supportedModelTypes.map { "\"\($0)\"" }.joined(separator: ", "))
        }
        let text = ConfigDefaults.filled(text, modelType: modelType)
        let fields = ConfigFields(object: text, section: section, file: file)
        let rope = try fields.rope()
        var config: [String: JSONValue] = [
            "hidden_size": .number(Double(try fields.int("hidden_size"))),
            "intermediate_size": .number(Double(try fields.int("intermediate_size"))),
            "layers": .number(Double(try fields.int("num_hidden_layers"))),
            "heads": .number(Double(try fields.int("num_attention_heads"))),
            "vocab_size": .number(Double(try fields.int("vocab_size"))),
            "rope_theta": .number(rope.theta),
        ]
        if let scaling = rope.scaling { config["rope_scaling"] = scaling }
        if let kvHeads = try fields.optionalInt("num_key_value_heads") { config["kv_heads"] = .number(Double(kvHeads)) }
        if let headDim = try fields.optionalInt("head_dim") { config["head_dim"] = .number(Double(headDim)) }
        if let tied = try fields.optionalBool("tie_word_embeddings") ?? tiedAtTop { config["tie_word_embeddings"] = .bool(tied) }
        // Copied under the same key, of the type transformers checks for it; absent or null leaves
        // the family default.
        func copy(_ keys: [String]) throws {
            for key in keys {
                if Self.booleanKeys.contains(key) {
                    if let value = try fields.optionalBool(key) { config[key] = .bool(value) }
                } else if key.hasSuffix("_act") {
                    if let value: String = try typedField(text, key, file: file, field: fields.name(key), expected: "a string") { config[key] = .string(value) }
                } else if let value = try fields.optionalNumber(key) {
                    config[key] = .number(key.hasSuffix("_eps") ? try positiveEpsilon(value, text, key, file: file, field: fields.name(key)) : value)
                }
            }
        }
        switch family {
        case "llama": try copy(["rms_norm_eps", "attention_bias", "mlp_bias", "hidden_act"])
        case "qwen2":
            try copy(["rms_norm_eps", "hidden_act"])
            // As Qwen2Config: the window exists only with use_sliding_window, and then applies to the
            // layers layer_types marks "sliding_attention" or, without layer_types, to those from
            // max_window_layers (28) on — a model with no such layer attends to the whole context.
            if try fields.optionalBool("use_sliding_window") == true {
                let slides = try (text["layer_types"] as? [String]).map { $0.contains("sliding_attention") }
                    ?? ((try fields.optionalInt("max_window_layers") ?? 28) < fields.int("num_hidden_layers"))
                if slides { try copy(["sliding_window"]) }
            }
        case "gemma":
            // GemmaConfig's bidirectional attention (each position sees the later ones too; for
            // embedding models) is not implemented: Chimera's attention is causal.
            if try fields.optionalBool("use_bidirectional_attention") == true {
                throw ImportError.unsupported(file: file, field: fields.name("use_bidirectional_attention"), found: "true",
                                              supported: "false (causal attention)")
            }
            try copy(["rms_norm_eps", "attention_bias"])
            // GemmaConfig (transformers 5) runs hidden_act, its legacy "gelu" as the tanh approximation;
            // an older config's hidden_activation is not read.
            if let act: String = try typedField(text, "hidden_act", file: file, field: fields.name("hidden_act"), expected: "a string") {
                config["hidden_act"] = .string(act == "gelu" ? "gelu_pytorch_tanh" : act)
            }
            if let version = transformersVersion { config["scale_spliced_features"] = .bool(version < 5) }
        case "phi":
            try copy(["layer_norm_eps", "hidden_act", "qk_layernorm"])
            if let factor = rope.partialRotaryFactor { config["partial_rotary_factor"] = .number(factor) }
        case "stablelm":
            try copy(["layer_norm_eps", "hidden_act", "use_qkv_bias", "qk_layernorm", "use_parallel_residual"])
            if let factor = rope.partialRotaryFactor { config["partial_rotary_factor"] = .number(factor) }
        default: break
        }
        var manifest = ComponentManifest(id: id, kind: .languageModel, family: family, config: .object(config))
        manifest.contextLength = try fields.int("max_position_embeddings")  // its model type's default when absent
        // Dynamic scaling stretches max_position_embeddings (its original context) by its factor.
        if case let .object(scaling)? = rope.scaling, scaling["type"] == .string("dynamic"), case let .number(factor)? = scaling["factor"],
           let context = manifest.contextLength, factor > 1 {
            manifest.contextLength = Int(min(Double(context) * factor, Double(SizeLimits.tokens)))  // (bounded before it is an Int)
        }
        return manifest
    }
}

/// Reads fields of one config section and names them in errors ("text_config.hidden_size").
private struct ConfigFields {
    let object: [String: Any]
    let section: String
    let file: String

    func name(_ key: String) -> String { section.isEmpty ? key : "\(section).\(key)" }

    func int(_ key: String) throws -> Int { try requiredField(object, key, file: file, field: name(key), expected: "an integer") }

    /// nil when absent or null; refused when present as anything but an integer ("32", 32.5).
    func optionalInt(_ key: String) throws -> Int? { try typedField(object, key, file: file, field: name(key), expected: "an integer") }

    /// nil when absent or null; refused when present as anything but true or false.
    func optionalBool(_ key: String) throws -> Bool? { try typedField(object, key, file: file, field: name(key), expected: "true or false") }

    /// nil when absent or null; refused when present as anything but a number.
    func optionalNumber(_ key: String, in object: [String: Any]? = nil, field: String? = nil) throws -> Double? {
        try typedField(object ?? self.object, key, file: file, field: name(field ?? key), expected: "a number")
    }

    /// The rotary settings as transformers reads them: the rope_scaling object if it is one with
    /// fields, else rope_parameters (transformers 5), else none; rope_theta and
    /// partial_rotary_factor from it or the top level (older configs); its rope type past
    /// "default" as the manifest's `rope_scaling`, transformers' defaults and derived values
    /// resolved (YaRN's attention factor, a missing original context).
    func rope() throws -> (theta: Double, partialRotaryFactor: Double?, scaling: JSONValue?) {
        var chosen: (key: String, section: [String: Any])?
        for key in ["rope_scaling", "rope_parameters"] {
            guard let value = object[key], !(value is NSNull) else { continue }
            guard let section = value as? [String: Any] else {
                throw ImportError.invalidValue(file: file, field: name(key), found: ImportError.shown(value), expected: "an object")
            }
            if chosen == nil, !section.isEmpty { chosen = (key, section) }
        }
        let section = chosen?.section ?? [:], prefix = chosen.map { "\($0.key)." } ?? ""
        func number(_ key: String) throws -> Double? { try optionalNumber(key, in: section, field: prefix + key) }
        let theta = try number("rope_theta") ?? optionalNumber("rope_theta") ?? 10000
        let partialRotaryFactor = try number("partial_rotary_factor") ?? optionalNumber("partial_rotary_factor")
        // transformers takes a "type" key for "rope_type".
        let typeKey = section["rope_type"] != nil ? "rope_type" : "type"
        let type: String = try typedField(section, typeKey, file: file, field: name(prefix + typeKey), expected: "a string") ?? "default"
        if type == "default" { return (theta, partialRotaryFactor, nil) }
        guard RopeScalingConfig.fields[type] != nil else {
            throw ImportError.unsupported(file: file, field: name(prefix + typeKey), found: "\"\(type)\"",
                                          supported: (["default"] + RopeScalingConfig.fields.keys.sorted()).map { "\"\($0)\"" }.joined(separator: ", "))
        }
        func required(_ key: String) throws -> Double {
            try requiredField(section, key, file: file, field: name(prefix + key), expected: "a number")
        }
        let context = try int("max_position_embeddings")
        // llama3 and YaRN: a top-level original_max_position_embeddings wins (Phi-3's layout), then
        // the section's, then max_position_embeddings (transformers' standardize_rope_params).
        func originalContext() throws -> Int {
            try optionalInt("original_max_position_embeddings")
                ?? typedField(section, "original_max_position_embeddings", file: file, field: name(prefix + "original_max_position_embeddings"), expected: "an integer")
                ?? context
        }
        var scaling: [String: JSONValue] = ["type": .string(type)]
        switch type {
        case "linear": scaling["factor"] = .number(try required("factor"))
        case "dynamic":  // scales past max_position_embeddings, not a section's original context
            scaling["factor"] = .number(try required("factor"))
            scaling["original_max_position_embeddings"] = .number(Double(context))
        case "llama3":
            for key in ["factor", "low_freq_factor", "high_freq_factor"] { scaling[key] = .number(try required(key)) }
            scaling["original_max_position_embeddings"] = .number(Double(try originalContext()))
        default:  // yarn, as _compute_yarn_parameters
            let original = try originalContext()
            guard section.keys.contains("factor") else {
                throw ImportError.missing(file: file, field: name(prefix + "factor"), why: "rope type \"yarn\" needs it (null: max_position_embeddings / original_max_position_embeddings)")
            }
            let factor = try number("factor") ?? Double(context) / Double(original)
            // mscale and mscale_all_dim count only when both are set and not 0 (else the manifest's default).
            if let given = try number("attention_factor") {
                scaling["attention_factor"] = .number(given)
            } else if let m = try number("mscale"), let all = try number("mscale_all_dim"), m != 0, all != 0 {
                scaling["attention_factor"] = .number(RotaryScaling.yarnMagnitude(factor, m) / RotaryScaling.yarnMagnitude(factor, all))
            }
            // beta_fast and beta_slow are read with Python's `or`: absent, null or 0 is the default.
            let betaFast = try number("beta_fast").flatMap { $0 == 0 ? nil : $0 } ?? 32
            let betaSlow = try number("beta_slow").flatMap { $0 == 0 ? nil : $0 } ?? 1
            // truncate: absent is true; null is falsy in transformers' `if truncate`.
            let truncate: Bool = section.keys.contains("truncate")
                ? (try typedField(section, "truncate", file: file, field: name(prefix + "truncate"), expected: "true or false") ?? false) : true
            scaling.merge(["factor": .number(factor), "original_max_position_embeddings": .number(Double(original)),
                           "beta_fast": .number(betaFast), "beta_slow": .number(betaSlow), "truncate": .bool(truncate)]) { $1 }
        }
        return (theta, partialRotaryFactor, .object(scaling))
    }
}

/// A checkpoint's generation_config.json, which transformers' `generate` uses when it is called
/// without arguments: the defaults Chimera honours (greedy or sampled, repetition penalty, answer
/// length) and the settings it has no equivalent for, to be reported as ignored.
struct GenerationConfigImport {
    /// nil when the file sets none of the defaults (most checkpoints: only token ids).
    var defaults: GenerationDefaults?
    /// "num_beams 4", ... (settings away from transformers' defaults that Chimera does not apply).
    var ignored: [String] = []
    /// max_length (prompt and answer together) when max_new_tokens does not override it: Chimera
    /// bounds the answer alone (`max_tokens`), so it is reported, not applied.
    var maxLength: Int?
    /// do_sample with temperature 0, which transformers refuses and Chimera takes as greedy.
    var samplesAtTemperatureZero = false
    var eosTokenID: Any?

    /// transformers' defaults of the settings that change what `generate` returns and that Chimera
    /// does not have; a file that keeps them at these values loses nothing.
    static let unsupported: [(key: String, isDefault: @Sendable (Any) -> Bool)] = [
        ("num_beams", { ($0 as? Int) == 1 }), ("num_beam_groups", { ($0 as? Int) == 1 }),
        ("penalty_alpha", { $0 is NSNull }), ("no_repeat_ngram_size", { ($0 as? Int) == 0 }),
        ("encoder_no_repeat_ngram_size", { ($0 as? Int) == 0 }), ("min_length", { ($0 as? Int) == 0 }),
        ("min_new_tokens", { $0 is NSNull }), ("typical_p", { ($0 as? Double) == 1 }), ("min_p", { $0 is NSNull }),
        ("epsilon_cutoff", { ($0 as? Double) == 0 }), ("eta_cutoff", { ($0 as? Double) == 0 }),
        ("diversity_penalty", { ($0 as? Double) == 0 }), ("bad_words_ids", { $0 is NSNull }),
        ("force_words_ids", { $0 is NSNull }), ("suppress_tokens", { $0 is NSNull }),
        ("begin_suppress_tokens", { $0 is NSNull }), ("forced_bos_token_id", { $0 is NSNull }),
        ("forced_eos_token_id", { $0 is NSNull }), ("sequence_bias", { $0 is NSNull }),
        ("guidance_scale", { $0 is NSNull }), ("exponential_decay_length_penalty", { $0 is NSNull }),
        ("stop_strings", { $0 is NSNull }), ("max_time", { $0 is NSNull }),
    ]

    /// Reads the config as transformers does: without `do_sample` (false by default) it is greedy
    /// whatever the temperature says; sampling takes temperature (default 1), top_k (default 50; 0
    /// turns it off) and top_p (1 is off); repetition_penalty 1 is none.
    init(object: [String: Any], file: String) throws {
        func number(_ key: String, _ valid: (Double) -> Bool, _ expected: String) throws -> Double? {
            guard let value = object[key], !(value is NSNull) else { return nil }
            guard let number = value as? Double, valid(number) else {
                throw ImportError.invalidValue(file: file, field: key, found: ImportError.shown(value), expected: expected)
            }
            return number
        }
        func integer(_ key: String, atLeast least: Int) throws -> Int? {
            guard let value = object[key], !(value is NSNull) else { return nil }
            guard let number = value as? Int, number >= least else {
                throw ImportError.invalidValue(file: file, field: key, found: ImportError.shown(value), expected: "an integer >= \(least)")
            }
            return number
        }
        var sample = false
        if let value = object["do_sample"], !(value is NSNull) {
            guard let flag = value as? Bool else {
                throw ImportError.invalidValue(file: file, field: "do_sample", found: ImportError.shown(value), expected: "true or false")
            }
            sample = flag
        }
        var defaults = GenerationDefaults()
        let temperature = try number("temperature", { $0 >= 0 && $0.isFinite }, "a number >= 0")
        let topK = try integer("top_k", atLeast: 0)
        let topP = try number("top_p", { $0 > 0 && $0 <= 1 }, "a number in (0, 1]")
        if sample {
            defaults.temperature = Float(temperature ?? 1)
            defaults.topK = (topK ?? 50) > 0 ? topK ?? 50 : nil
            defaults.topP = topP.flatMap { $0 < 1 ? Float($0) : nil }
        }
        if let penalty = try number("repetition_penalty", { $0 > 0 && $0.isFinite }, "a positive number"), penalty != 1 {
            defaults.repetitionPenalty = Float(penalty)
        }
        defaults.maxTokens = try integer("max_new_tokens", atLeast: 0)
        let maxLength = try integer("max_length", atLeast: 0)
        self.maxLength = defaults.maxTokens == nil ? maxLength : nil
        samplesAtTemperatureZero = sample && temperature == 0
        self.defaults = defaults == GenerationDefaults() ? nil : defaults
        ignored = Self.unsupported.compactMap { key, isDefault in
            guard let value = object[key], !isDefault(value) else { return nil }
            return "\(key) \(value)"
        }
        eosTokenID = object["eos_token_id"]
    }

    /// What import says on stderr about the settings it does not apply as transformers would, for a
    /// language model whose context is `context` tokens (a max_length as long is no bound).
    func warnings(file: String, context: Int?) -> [String] {
        var warnings: [String] = []
        if !ignored.isEmpty {
            warnings.append("\(file): \(ignored.joined(separator: ", ")): not applied "
                            + "(Chimera decodes one sequence, greedily or by temperature, top-k and top-p sampling, with a repetition penalty)")
        }
        if let maxLength, maxLength < context ?? .max {
            warnings.append("\(file): max_length \(maxLength) (prompt and answer together) is not applied: an answer stops after "
                            + "--max-tokens new tokens (\(GenerationOptions().maxTokens) unless given), or at the context's end")
        }
        if samplesAtTemperatureZero {
            warnings.append("\(file): do_sample with temperature 0 is taken as greedy (transformers refuses it)")
        }
        return warnings
    }
}
