"""Anchor for bench/minhash.ts: sequential MinHash-LSH near-dedupe with rensa or datasketch.

Reads one JSON document per line ({"text": ...}, already normalised: lower case, single spaces),
and for each document, in order, does what Flywheel's near-dedupe operator does: sketch its word
k-shingles, query the LSH index, call it a duplicate if a candidate's estimated Jaccard is at or
above the threshold, and otherwise insert it. Prints one JSON object: the CPU seconds (time.process_time) of each pass
(the whole loop: shingling, sketching, query, estimate, insert) and the duplicate flags of the
last pass.

    python near_dup_anchor.py docs.jsonl --impl rensa --passes 3
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


def run_rensa(texts, args):
    from rensa import RMinHash, RMinHashLSH

    lsh = RMinHashLSH(threshold=args.threshold, num_perm=args.perm, num_bands=args.bands)
    kept = {}
    flags = []
    start = time.process_time()
    for i, text in enumerate(texts):
        m = RMinHash(num_perm=args.perm, seed=42)
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


def run_datasketch(texts, args):
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=args.threshold, num_perm=args.perm, params=(args.bands, args.perm // args.bands))
    kept = {}
    flags = []
    start = time.process_time()
    for i, text in enumerate(texts):
        m = MinHash(num_perm=args.perm, seed=1)
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


def main():
    p = argparse.ArgumentParser()
    p.add_argument("docs")
    p.add_argument("--impl", choices=["rensa", "datasketch"], required=True)
    p.add_argument("--passes", type=int, default=3)
    p.add_argument("--threshold", type=float, default=0.8)
    p.add_argument("--perm", type=int, default=128)
    p.add_argument("--bands", type=int, default=16)
    p.add_argument("--k", type=int, default=3)
    args = p.parse_args()
    with open(args.docs, encoding="utf8") as f:
        texts = [json.loads(line)["text"] for line in f if line.strip()]
    run = run_rensa if args.impl == "rensa" else run_datasketch
    seconds = []
    flags = []
    for _ in range(args.passes):
        s, flags = run(texts, args)
        seconds.append(s)
    import importlib.metadata as md

    json.dump({"impl": args.impl, "version": md.version(args.impl), "docs": len(texts), "seconds": seconds, "duplicates": [int(x) for x in flags]}, sys.stdout)


if __name__ == "__main__":
    main()
