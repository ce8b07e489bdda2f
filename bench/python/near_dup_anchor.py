"""Anchor for bench/minhash.ts: sequential MinHash-LSH near-dedupe with rensa or datasketch.

Reads one JSON document per line ({"text": ...}, already normalised: lower case, single spaces),
and for each document, in order, does what Flywheel's near-dedupe operator does: sketch its word
k-shingles, query the LSH index, call it a duplicate if a candidate's estimated Jaccard is at or
above the threshold, and otherwise insert it. Prints one JSON object: the CPU seconds (time.process_time) of each pass
(the whole loop: shingling, sketching, query, estimate, insert) and the duplicate flags of every
pass. Pass i seeds the hash functions with seeds[i] (--seeds, cycled): precision and recall
differ by about ±0.01 from one seed to the next, so the bench compares their means.

    python near_dup_anchor.py docs.jsonl --impl rensa --passes 3 --seeds 1,2,3
"""

import argparse
import json
import sys
import time


def shingles(text, k):
    words = text.split(" ")
    if len(words) <= k:
        return [text]
    return [" ".join(words[i : i + k]) for i in range(len(words) - k + 1)]


def run_rensa(texts, args, seed):
    from rensa import RMinHash, RMinHashLSH

    lsh = RMinHashLSH(threshold=args.threshold, num_perm=args.perm, num_bands=args.bands)
    kept = {}
    flags = []
    start = time.process_time()
    for i, text in enumerate(texts):
        m = RMinHash(num_perm=args.perm, seed=seed)
        m.update(shingles(text, args.k))
        duplicate = False
        for c in lsh.query(m):
            if m.jaccard(kept[c]) >= args.threshold:
                duplicate = True
                break
        if not duplicate:
            lsh.insert(i, m)
            kept[i] = m
        flags.append(duplicate)
    return time.process_time() - start, flags


def run_datasketch(texts, args, seed):
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=args.threshold, num_perm=args.perm, params=(args.bands, args.perm // args.bands))
    kept = {}
    flags = []
    start = time.process_time()
    for i, text in enumerate(texts):
        m = MinHash(num_perm=args.perm, seed=seed)
        m.update_batch([s.encode("utf8") for s in shingles(text, args.k)])
        duplicate = False
        for c in lsh.query(m):
            if m.jaccard(kept[c]) >= args.threshold:
                duplicate = True
                break
        if not duplicate:
            lsh.insert(i, m)
            kept[i] = m
        flags.append(duplicate)
    return time.process_time() - start, flags


def pair_estimates(texts, pairs, args, seed):
    """The estimated Jaccard of each (i, j) pair under one seed (not timed: the bench's bias check)."""
    if args.impl == "rensa":
        from rensa import RMinHash

        def sketch(t):
            m = RMinHash(num_perm=args.perm, seed=seed)
            m.update(shingles(t, args.k))
            return m
    else:
        from datasketch import MinHash

        def sketch(t):
            m = MinHash(num_perm=args.perm, seed=seed)
            m.update_batch([s.encode("utf8") for s in shingles(t, args.k)])
            return m

    sketches = {i: sketch(texts[i]) for i in sorted({i for p in pairs for i in p[:2]})}
    return [sketches[i].jaccard(sketches[j]) for i, j in pairs]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("docs")
    p.add_argument("--impl", choices=["rensa", "datasketch"], required=True)
    p.add_argument("--passes", type=int, default=3)
    p.add_argument("--threshold", type=float, default=0.8)
    p.add_argument("--perm", type=int, default=128)
    p.add_argument("--bands", type=int, default=16)
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--seeds", default="1", help="comma-separated seeds, one per pass (cycled)")
    p.add_argument("--pairs", help="JSON file of [i, j] document pairs: their estimates under each pass's seed are printed too")
    args = p.parse_args()
    with open(args.docs, encoding="utf8") as f:
        texts = [json.loads(line)["text"] for line in f if line.strip()]
    run = run_rensa if args.impl == "rensa" else run_datasketch
    seeds = [int(x) for x in args.seeds.split(",")]
    seconds = []
    flags = []
    for i in range(args.passes):
        s, f = run(texts, args, seeds[i % len(seeds)])
        seconds.append(s)
        flags.append([int(x) for x in f])
    estimates = []
    if args.pairs:
        with open(args.pairs, encoding="utf8") as f:
            pairs = [(p[0], p[1]) for p in json.load(f)]
        estimates = [pair_estimates(texts, pairs, args, seeds[i % len(seeds)]) for i in range(args.passes)]
    import importlib.metadata as md

    json.dump({"impl": args.impl, "version": md.version(args.impl), "docs": len(texts), "seconds": seconds, "seeds": [seeds[i % len(seeds)] for i in range(args.passes)], "duplicates": flags, "pair_estimates": estimates}, sys.stdout)


if __name__ == "__main__":
    main()
