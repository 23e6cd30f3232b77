import Foundation

/// The `model` section. Only BPE is supported (GPT-2/Qwen2/Llama/Gemma all use it).
enum Models {
    static func make(_ node: ConfigNode) throws(TokenizerError) -> BPEModel {
        // Old files omit "type" for BPE; recognise them by their merges.
        let type = try node.optionalString("type") ?? (node["merges"] != nil ? "BPE" : "")
        guard type == "BPE" else {
            throw .unsupported(file: node.file, field: node.path + ".type",
                               value: type.isEmpty ? "model without a type" : "model type \"\(type)\"")
        }
        return try BPEModel(node: node)
    }
}

/// Byte-pair encoding: a word starts as single characters and the adjacent pair with
/// the lowest merge rank is merged until no ranked pair is left.
final class BPEModel: @unchecked Sendable {
    let vocab: [ExactString: Int]
    /// id -> token text (nil for holes in the id range).
    let idToToken: [String?]
    /// (left id, right id) packed in a UInt64 -> (rank, merged id).
    private let merges: [UInt64: (rank: Int32, id: Int32)]
    private let unkID: Int?
    private let fuseUnk: Bool
    private let ignoreMerges: Bool
    private let continuingSubwordPrefix: String?
    private let endOfWordSuffix: String?
    /// <0x00>...<0xFF> ids when byte_fallback is on and all 256 are in the vocab.
    private let byteFallbackIDs: [Int]?

    /// Unicode scalars of the longest vocabulary entry: no id covers more scalars of a word.
    private let longestEntry: Int

    // Words repeat a lot in real text, so results are cached (guarded for concurrent encodes).
    private var cache: [ExactString: [Int]] = [:]
    private let cacheLock = NSLock()
    private static let cacheLimit = 50_000

    init(node: ConfigNode) throws(TokenizerError) {
        let vocabNode = try node.required("vocab")
        var vocab: [ExactString: Int] = [:]
        var maxID = -1
        for (token, idNode) in try vocabNode.asObject() {
            let id = try idNode.asInt()
            guard id >= 0, id < 1 << 24 else { throw idNode.invalid("a token id in 0..<16777216") }
            vocab[ExactString(token)] = id
            maxID = max(maxID, id)
        }
        var idToToken = [String?](repeating: nil, count: maxID + 1)
        for (token, id) in vocab { idToToken[id] = token.value }
        self.vocab = vocab
        self.idToToken = idToToken
        longestEntry = max(1, vocab.keys.map { $0.value.unicodeScalars.count }.max() ?? 1)

        if let unk = try node.optionalString("unk_token") {
            guard let id = vocab[ExactString(unk)] else {
                throw .invalidField(file: node.file, field: node.path + ".unk_token", detail: "\"\(unk)\" is not in the vocab")
            }
            unkID = id
        } else {
            unkID = nil
        }
        fuseUnk = try node.bool("fuse_unk", default: false)
        ignoreMerges = try node.bool("ignore_merges", default: false)
        continuingSubwordPrefix = try node.optionalString("continuing_subword_prefix")
        endOfWordSuffix = try node.optionalString("end_of_word_suffix")
        if try node.bool("byte_fallback", default: false) {
            let ids = (0..<256).compactMap { vocab[ExactString(String(format: "<0x%02X>", $0))] }
            byteFallbackIDs = ids.count == 256 ? ids : nil
        } else {
            byteFallbackIDs = nil
        }

        var merges: [UInt64: (Int32, Int32)] = [:]
        let prefixLength = continuingSubwordPrefix?.unicodeScalars.count ?? 0
        for (rank, mergeNode) in try (node["merges"]?.asArray() ?? []).enumerated() {
            let pair: [String]
            switch mergeNode.value {
            case .string(let line):  // "a b"
                pair = line.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
            case .array:  // ["a", "b"]
                pair = try mergeNode.asArray().map { node throws(TokenizerError) in try node.asString() }
            default:
                throw mergeNode.invalid("\"a b\" or [\"a\", \"b\"]")
            }
            guard pair.count == 2 else { throw mergeNode.invalid("exactly two tokens") }
            let right = prefixLength > 0 && pair[1].hasExactPrefix(continuingSubwordPrefix!)
                ? String(scalars: pair[1].unicodeScalars.dropFirst(prefixLength)) : pair[1]
            guard let a = vocab[ExactString(pair[0])], let b = vocab[ExactString(pair[1])],
                  let merged = vocab[ExactString(pair[0] + right)] else {
                throw .invalidField(file: node.file, field: mergeNode.path,
                                    detail: "merge \(pair) uses a token missing from the vocab")
            }
            let key = UInt64(a) << 32 | UInt64(b)
            merges[key] = (Int32(rank), Int32(merged))  // a merge listed twice ranks by its last place, as in `tokenizers`
        }
        self.merges = merges
    }

    /// The fewest ids `word` can become, from its length alone: each scalar is at least one
    /// initial symbol when it falls back to bytes or to an unknown token of its own, and an id
    /// covers at most `longestEntry` of them (a prefix or suffix only lengthens an entry). 0 when
    /// unknown scalars may vanish (no unk, no byte fallback) or fuse into one unknown token.
    func fewestIDs(_ word: String) -> Int {
        guard byteFallbackIDs != nil || (unkID != nil && !fuseUnk) else { return 0 }
        return (word.unicodeScalars.count + longestEntry - 1) / longestEntry
    }

    func tokenize(_ word: String) -> [Int] {
        if word.isEmpty { return [] }
        let key = ExactString(word)
        if ignoreMerges, let id = vocab[key] { return [id] }
        cacheLock.lock()
        let cached = cache[key]
        cacheLock.unlock()
        if let cached { return cached }
        let ids = merge(initialSymbols(word))
        cacheLock.lock()
        if cache.count >= Self.cacheLimit { cache.removeAll(keepingCapacity: true) }
        cache[key] = ids
        cacheLock.unlock()
        return ids
    }

    /// One symbol per Unicode scalar; unknown scalars become byte tokens or <unk>.
    private func initialSymbols(_ word: String) -> [Int] {
        var symbols: [Int] = []
        var pendingUnk = false
        let scalars = Array(word.unicodeScalars)
        for (i, scalar) in scalars.enumerated() {
            var piece = String(scalar)
            if i > 0, let prefix = continuingSubwordPrefix { piece = prefix + piece }
            if i == scalars.count - 1, let suffix = endOfWordSuffix { piece += suffix }
            if let id = vocab[ExactString(piece)] {
                symbols.append(id)
                pendingUnk = false
            } else if let byteIDs = byteFallbackIDs {
                symbols.append(contentsOf: String(scalar).utf8.map { byteIDs[Int($0)] })
                pendingUnk = false
            } else if let unkID {
                // fuse_unk: a run of unknown characters becomes a single <unk>.
                if !(fuseUnk && pendingUnk) { symbols.append(unkID) }
                pendingUnk = true
            }
        }
        return symbols
    }

    private struct Candidate: Comparable {
        let rank: Int32
        let position: Int
        let merged: Int32
        static func < (a: Candidate, b: Candidate) -> Bool {
            a.rank != b.rank ? a.rank < b.rank : a.position < b.position
        }
    }

    /// Lowest-rank-first merging with a binary heap over a linked list of symbols,
    /// O(n log n) per word (same tie-breaking as the Rust code: leftmost first).
    private func merge(_ initial: [Int]) -> [Int] {
        guard initial.count > 1 else { return initial }
        var ids = initial
        var prev = Array(-1..<(ids.count - 1))
        var next = Array(1...ids.count)
        next[ids.count - 1] = -1
        var alive = [Bool](repeating: true, count: ids.count)
        var heap = MinHeap<Candidate>()

        func push(_ position: Int) {
            let right = next[position]
            guard right >= 0, let m = merges[UInt64(ids[position]) << 32 | UInt64(ids[right])] else { return }
            heap.push(Candidate(rank: m.rank, position: position, merged: m.id))
        }
        for i in 0..<ids.count - 1 { push(i) }

        while let top = heap.pop() {
            let p = top.position
            guard alive[p], next[p] >= 0 else { continue }
            let right = next[p]
            // Skip stale candidates: the pair at p must still merge into the same token.
            guard let m = merges[UInt64(ids[p]) << 32 | UInt64(ids[right])], m.id == top.merged else { continue }
            ids[p] = Int(top.merged)
            alive[right] = false
            next[p] = next[right]
            if next[p] >= 0 { prev[next[p]] = p }
            if prev[p] >= 0 { push(prev[p]) }
            push(p)
        }
        return ids.indices.filter { alive[$0] }.map { ids[$0] }
    }
}

/// A minimal binary min-heap.
struct MinHeap<Element: Comparable> {
    private var items: [Element] = []

    mutating func push(_ element: Element) {
        items.append(element)
        var child = items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard items[child] < items[parent] else { break }
            items.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> Element? {
        guard !items.isEmpty else { return nil }
        items.swapAt(0, items.count - 1)
        let top = items.removeLast()
        var parent = 0
        while true {
            let left = 2 * parent + 1, right = left + 1
            var smallest = parent
            if left < items.count, items[left] < items[smallest] { smallest = left }
            if right < items.count, items[right] < items[smallest] { smallest = right }
            if smallest == parent { break }
            items.swapAt(parent, smallest)
            parent = smallest
        }
        return top
    }
}
