import ChimeraIO
import ChimeraTensor
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Where a loader's tensors come from.
public enum WeightSource: Sendable {
    /// A checkpoint's safetensors files.
    case store(WeightStore)
    /// Tensors of the requested shapes that read as zeros and cost no memory until written
    /// (pages of one reserved anonymous mapping): for counting parameters and planning memory.
    case shapesOnly
    /// Freshly allocated random tensors (uniform ±scale), for benchmarks of real shapes without a download.
    case random(seed: UInt64, scale: Float)
}

/// What a loader does with a stored weight matrix (f32, f16, bf16, q8_0, q6_0, q4_0) that it does not convert.
public enum StoredMatrices: String, Sendable, CaseIterable {
    /// Widened to float32 on load, so that `loaded` names and holds every weight (training, parity).
    case widened
    /// Kept as stored and copied out of the file mapping into huge pages at load
    /// (SafeTensorsFile.resident): decode streams them faster (WeightMemory), for one memcpy
    /// of the weights at load. Listed in `matrices`; only float32 ones also in `loaded`.
    case resident
    /// Kept as stored and read in place from the memory-mapped file: nothing copied at load, the
    /// pages shared with the page cache (and other processes mapping the file), 4 KiB pages.
    case mapped
}

/// Hands out a component's weights by name, checks shapes, and records every tensor it hands
/// out under its full name (the component's `parameters`).
public final class ParameterLoader: @unchecked Sendable {
    public let source: WeightSource
    public let reference: WeightsReference
    /// Scope inside the component ("encoder.layers.3.").
    public let scope: String
    /// Format weight matrices are converted to on load (nil: see `storedMatrices`; random: f32).
    public let matrixFormat: WeightFormat?
    /// What becomes of a stored matrix that no `matrixFormat` converts.
    public let storedMatrices: StoredMatrices
    private let record: Record

    final class Record: @unchecked Sendable {
        var loaded: [(name: String, tensor: Tensor)] = []
        var matrices: [(name: String, matrix: WeightMatrix)] = []
        var generator = SplitMix64(seed: 0)
        var storedBytesRead = 0
        var onProgress: ((_ read: Int, _ total: Int) -> Void)?
    }

    /// Called after each stored tensor is handed out, with the stored bytes read so far (scales of
    /// quantized matrices included) and the store's total: for progress lines while large
    /// weights load. Shared with the scoped loaders.
    public var onProgress: ((_ read: Int, _ total: Int) -> Void)? {
        get { record.onProgress }
        set { record.onProgress = newValue }
    }

    /// Progress lines "loading ID: N of M MB" to `report` while this loader's weights load (ByteProgress).
    public func reportLoading(_ id: String, to report: @escaping (String) -> Void) {
        onProgress = ByteProgress("loading \(id)", report: report).callAsFunction
    }

    /// Counts a stored tensor (and its scales) as read and reports progress.
    private func countRead(_ stored: String, in store: WeightStore) {
        record.storedBytesRead += (store.info(stored)?.byteCount ?? 0) + (store.info(stored + SafeTensorsFile.scalesSuffix)?.byteCount ?? 0)
        record.onProgress?(record.storedBytesRead, store.byteCount)
    }

    public init(source: WeightSource, reference: WeightsReference = WeightsReference(files: ["(none)"]),
                matrixFormat: WeightFormat? = nil, storedMatrices: StoredMatrices = .widened) {
        self.source = source
        self.reference = reference
        self.matrixFormat = matrixFormat
        // Converted matrices are in their new format: widening the others would mix the two.
        self.storedMatrices = storedMatrices == .widened && matrixFormat != nil ? .resident : storedMatrices
        scope = ""
        record = Record()
        if case let .random(seed, _) = source { record.generator = SplitMix64(seed: seed) }
    }

    public convenience init(store: WeightStore, reference: WeightsReference) {
        self.init(source: .store(store), reference: reference)
    }

    private init(source: WeightSource, reference: WeightsReference, matrixFormat: WeightFormat?, storedMatrices: StoredMatrices,
                 scope: String, record: Record) {
        self.source = source; self.reference = reference; self.matrixFormat = matrixFormat
        self.storedMatrices = storedMatrices; self.scope = scope; self.record = record
    }

    /// A loader for a sub-module ("encoder.layers.3.") sharing this loader's record.
    public func scoped(_ name: String) -> ParameterLoader {
        ParameterLoader(source: source, reference: reference, matrixFormat: matrixFormat, storedMatrices: storedMatrices,
                        scope: scope + name, record: record)
    }

    func storedName(_ name: String) -> String { reference.storedName(scope + name) }

    /// Optional tensors (biases some checkpoints have) exist only in real stores.
    public func contains(_ name: String) -> Bool {
        if case let .store(store) = source { return store.contains(storedName(name)) }
        return false
    }

    public func tensor(_ name: String, shape: [Int]) throws -> Tensor {
        let stored = storedName(name)
        let t: Tensor
        switch source {
        case let .store(store):
            t = try store.tensor(stored, shape: shape)
            countRead(stored, in: store)
        case .shapesOnly: t = Tensor(shape: shape, storage: try ZeroPages.storage(count: try syntheticCount(stored, shape), tensor: stored))
        case let .random(_, scale):
            _ = try syntheticCount(stored, shape)
            t = Tensor(zeros: shape)
            record.generator.fillUniform(t.data, count: t.count, bound: scale)
        }
        record.loaded.append((stored, t))
        return t
    }

    /// A weight matrix [rows, columns]: converted to `matrixFormat` when one is set, otherwise as
    /// `storedMatrices` says. Float32 matrices are also recorded in `loaded`; every matrix is
    /// recorded in `matrices`.
    public func matrix(_ name: String, shape: [Int]) throws -> WeightMatrix {
        precondition(shape.count == 2, "matrix \(name) needs a 2-D shape, found \(shape)")
        let stored = storedName(name)
        // Widths that are not whole blocks of 32 (SigLIP's 4304) stay unquantized.
        let matrixFormat = self.matrixFormat.flatMap { $0.isQuantized && shape[1] % 32 != 0 ? nil : $0.forMatrix(named: stored) }
        var m: WeightMatrix
        switch source {
        case let .store(store):
            m = try store.matrix(stored, shape: shape)
            if let target = matrixFormat, target != m.format {
                m = try m.converted(to: target, name: stored)
            } else {
                switch storedMatrices {
                case .widened: if m.format != .f32 { m = WeightMatrix(m.widened()) }
                case .resident: m = try store.resident(m, named: stored)
                case .mapped: break  // `store.matrix` reads the mapping in place
                }
            }
            countRead(stored, in: store)
        case .shapesOnly:
            m = WeightMatrix(Tensor(shape: shape, storage: try ZeroPages.storage(count: try syntheticCount(stored, shape), tensor: stored)))
        case let .random(_, scale):
            _ = try syntheticCount(stored, shape)
            let record = self.record
            m = try WeightMatrix.building(matrixFormat ?? .f32, rows: shape[0], columns: shape[1], name: stored) { _, count, out in
                record.generator.fillUniform(out, count: count * shape[1], bound: scale)
            }
        }
        if let t = m.tensor { record.loaded.append((stored, t)) }
        record.matrices.append((stored, m))
        return m
    }

    /// Elements of a tensor no file holds (shapes only, or random): its shape comes from the
    /// manifest's config, and a garbage size there must be an error, not an overflow or an
    /// allocation the machine cannot make.
    private func syntheticCount(_ stored: String, _ shape: [Int]) throws -> Int {
        let limit: Int, what: String
        if case .random = source {
            limit = Int(ProcessInfo.processInfo.physicalMemory / 4); what = "float32 values than this machine's memory holds"
        } else {
            limit = ZeroPages.capacity; what = "elements than planning reserves (\(ZeroPages.capacity))"
        }
        var count = 1
        for d in shape {
            let (product, overflow) = count.multipliedReportingOverflow(by: d)
            guard d >= 0, !overflow, product <= limit else { throw WeightError.tooLarge(tensor: stored, shape: shape, reason: "more \(what)") }
            count = product
        }
        return count
    }

    /// Every weight matrix handed out, by stored name, in its format.
    public var matrices: [(name: String, matrix: WeightMatrix)] { record.matrices }

    public func tensorIfPresent(_ name: String, shape: [Int]) throws -> Tensor? {
        contains(name) ? try tensor(name, shape: shape) : nil
    }

    public var loaded: [(name: String, tensor: Tensor)] { record.loaded }

    /// Bytes of every weight handed out so far: the matrices in their formats, the other tensors
    /// (norms, biases, an untied embedding table) as float32.
    public var weightBytes: Int {
        let matrixNames = Set(matrices.map(\.name))
        return matrices.reduce(0) { $0 + $1.matrix.byteCount }
            + loaded.filter { !matrixNames.contains($0.name) }.reduce(0) { $0 + $1.tensor.count * 4 }
    }
}

/// Progress lines of long work over bytes, "loading ID: 420 of 988 MB": at most one a second and
/// the first after a second, so that small models load (and quantize) without any.
public final class ByteProgress {
    let label: String, report: (String) -> Void, interval: TimeInterval
    private var last = Date()

    public init(_ label: String, report: @escaping (String) -> Void, interval: TimeInterval = 1) {
        self.label = label; self.report = report; self.interval = interval
    }

    public func callAsFunction(done: Int, total: Int) {
        let now = Date()
        guard now.timeIntervalSince(last) >= interval else { return }
        last = now
        report("\(label): \(done / 1_000_000) of \(total / 1_000_000) MB")
    }
}

extension WeightFormat {
    /// The format a matrix named `name` gets when a whole model is converted to `self`: embeddings
    /// (a matrix only when tied to the lm_head) get q6_0 when the rest goes to 4 bits, as llama.cpp
    /// keeps its output matrix at 6 bits (Q6_K): the logits are sensitive to it. (At q8_0 it was
    /// 41 % of a Qwen2-0.5B q4_0 token's bytes; q6_0 reads 0.76 of them.)
    public func forMatrix(named name: String) -> WeightFormat {
        self == .q4_0 && name.hasSuffix("embed_tokens.weight") ? .q6_0 : self
    }
}

/// One large reserved, never-written anonymous mapping: every shapes-only tensor points at it.
enum ZeroPages {
    static let capacity = 1 << 36  // 64 Gi floats of address space; untouched pages cost nothing
    /// nil where the address space is limited (`ulimit -v`): planning then says so.
    nonisolated(unsafe) static let base: UnsafeMutablePointer<Float>? = {
        let p = mmap(nil, capacity * 4, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        return p == MAP_FAILED ? nil : p?.assumingMemoryBound(to: Float.self)
    }()
    final class Owner: @unchecked Sendable {}
    static let owner = Owner()

    /// `count` (at most `capacity`, see ParameterLoader.syntheticCount) zeros.
    static func storage(count: Int, tensor: String) throws -> TensorStorage {
        guard let base else {
            throw WeightError.tooLarge(tensor: tensor, shape: [count], reason: "could not reserve \(capacity * 4 >> 30) GiB of address space "
                                       + "for shapes-only tensors (is it limited, `ulimit -v`?)")
        }
        return TensorStorage(borrowing: base, count: count, owner: owner)
    }
}

/// What a family gets to build a component: its manifest, its weights (nil for a connector that
/// starts fresh) and, for connectors, the widths the assembler settled.
public struct ComponentBuildContext: Sendable {
    public var weights: ParameterLoader?
    public var inputWidth: Int?
    public var outputWidth: Int?
    public init(weights: ParameterLoader?, inputWidth: Int? = nil, outputWidth: Int? = nil) {
        self.weights = weights; self.inputWidth = inputWidth; self.outputWidth = outputWidth
    }
}

/// A component family: an exact name, the kind it builds, and how.
public struct ComponentFamily: Sendable {
    public let name: String
    public let kind: ComponentKind
    public let summary: String
    public let origin: String
    /// Checks a manifest's config without loading weights (for `validate` and `compat`).
    public let validate: @Sendable (ComponentManifest) throws -> Void
    public let create: @Sendable (ComponentManifest, ComponentBuildContext) throws -> any Component
    /// Connectors: tokens out for tokens in, from the manifest alone (nil: that count is refused).
    public let connectorTokens: @Sendable (ComponentManifest, Int) -> Int?
    /// Encoders: how many hidden states an input's feature_layer indexes, from the manifest alone
    /// (nil: not known before the encoder is built, checked then).
    public let hiddenStates: @Sendable (ComponentManifest) -> Int?
    /// Connectors whose output is as wide as their input whatever the manifest's widths say
    /// ("auto"): the encoder's width must then be the language model's.
    public let keepsWidth: Bool

    public init(name: String, kind: ComponentKind, summary: String, origin: String = "built-in",
                validate: @escaping @Sendable (ComponentManifest) throws -> Void,
                connectorTokens: @escaping @Sendable (ComponentManifest, Int) -> Int? = { _, tokens in tokens },
                hiddenStates: @escaping @Sendable (ComponentManifest) -> Int? = { _ in nil }, keepsWidth: Bool = false,
                create: @escaping @Sendable (ComponentManifest, ComponentBuildContext) throws -> any Component) {
        self.name = name; self.kind = kind; self.summary = summary; self.origin = origin
        self.validate = validate; self.connectorTokens = connectorTokens; self.hiddenStates = hiddenStates; self.keepsWidth = keepsWidth
        self.create = create
    }
}

public enum FamilyError: LocalizedError {
    case unknownFamily(name: String, kind: ComponentKind, manifest: String, known: [String])
    case wrongKind(family: String, expected: ComponentKind, found: ComponentKind, manifest: String)
    case duplicate(name: String)
    case badWeights(manifest: String, reason: String)

    public var errorDescription: String? {
        switch self {
        case let .unknownFamily(name, kind, manifest, known):
            return "\(manifest): unknown \(kind.rawValue) family '\(name)' (known: \(known.joined(separator: ", ")))"
        case let .wrongKind(family, expected, found, manifest):
            return "\(manifest): family '\(family)' builds \(expected.rawValue)s, but the manifest's kind is \(found.rawValue)"
        case let .duplicate(name): return "component family '\(name)' is registered twice"
        case let .badWeights(manifest, reason): return "\(manifest): \(reason)"
        }
    }
}

/// Families by exact name. Built at start-up by whoever owns the process (the CLI registers the
/// built-ins and, later, plugins): no global state.
public final class FamilyRegistry: @unchecked Sendable {
    public private(set) var families: [String: ComponentFamily] = [:]

    public init() {}

    public func register(_ family: ComponentFamily) throws {
        guard families[family.name] == nil else { throw FamilyError.duplicate(name: family.name) }
        families[family.name] = family
    }

    public func family(for manifest: ComponentManifest) throws -> ComponentFamily {
        guard let family = families[manifest.family] else {
            let known = families.values.filter { $0.kind == manifest.kind }.map(\.name).sorted()
            throw FamilyError.unknownFamily(name: manifest.family, kind: manifest.kind, manifest: manifest.originFile, known: known)
        }
        guard family.kind == manifest.kind else {
            throw FamilyError.wrongKind(family: family.name, expected: family.kind, found: manifest.kind, manifest: manifest.originFile)
        }
        return family
    }

    /// Opens the manifest's weights (or stands in `substitute` for them) and builds the component.
    /// `matrixFormat` converts every weight matrix on load (benchmarks of one precision);
    /// `storedMatrices` says what becomes of the other matrices (see ParameterLoader). `progress`
    /// gets a line now and then while large weights load (ByteProgress).
    public func build(_ manifest: ComponentManifest, inputWidth: Int? = nil, outputWidth: Int? = nil,
                      substitute: WeightSource? = nil, matrixFormat: WeightFormat? = nil,
                      storedMatrices: StoredMatrices = .widened, progress: ((String) -> Void)? = nil) throws -> any Component {
        let family = try family(for: manifest)
        var loader: ParameterLoader?
        if let substitute {
            loader = ParameterLoader(source: substitute, reference: manifest.weights ?? WeightsReference(files: ["(none)"]),
                                     matrixFormat: matrixFormat, storedMatrices: storedMatrices)
        } else if let weights = manifest.weights {
            let store = try WeightStore(files: try manifest.weightFiles().map(\.path))
            loader = ParameterLoader(source: .store(store), reference: weights, matrixFormat: matrixFormat,
                                     storedMatrices: storedMatrices)
        }
        if let progress { loader?.reportLoading(manifest.id, to: progress) }
        return try family.create(manifest, ComponentBuildContext(weights: loader, inputWidth: inputWidth, outputWidth: outputWidth))
    }
}
