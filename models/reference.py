"""The reference a text model's Node results are checked against: Python tokenizers + onnxruntime.

    python models/reference.py <model-dir> < request.json > result.json

request: {"texts": [...], "maxTokens": 128, "pooling": "mean" | "cls", "normalize": true,
          "batch": 32}
result:  {"ids": [[...], ...], "embeddings": [[...], ...]}
With "head" ('logit' | 'sigmoid' | 'regression' | 'softmax:<k>') the model's "logits" output is
scored instead: result {"ids": ..., "types": ..., "scores": [...]}; a text may then be a pair
[first, second] (the tokenizer's pair template, truncated longest-first).
The tokenizer is tokenizer.json as Hugging Face's own library reads it, truncated to maxTokens
(special tokens included) and padded to each batch's longest; pooling as sentence-transformers
does it (mean over attended tokens, then L2 normalisation). Also the Python anchor of
bench/text-models.ts ("bench": true in the request: times tokenize + run + pool instead).
"""

import json
import sys
import time

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


def main() -> None:
    model_dir = sys.argv[1]
    req = json.load(sys.stdin)
    tok = Tokenizer.from_file(f'{model_dir}/tokenizer.json')
    tok.enable_truncation(max_length=req.get('maxTokens', 128))
    tok.enable_padding(pad_id=0, pad_token='[PAD]')
    opts = ort.SessionOptions()
    if 'threads' in req:
        opts.intra_op_num_threads = req['threads']
        opts.inter_op_num_threads = 1
    session = ort.InferenceSession(f'{model_dir}/model.onnx', opts, providers=['CPUExecutionProvider'])
    names = {i.name for i in session.get_inputs()}
    texts = req['texts']
    batch = req.get('batch', 32)

    def score(chunk):
        enc = tok.encode_batch([tuple(t) if isinstance(t, list) else t for t in chunk])
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        types = np.array([e.type_ids for e in enc], dtype=np.int64)
        feeds = {'input_ids': ids, 'attention_mask': mask}
        if 'token_type_ids' in names:
            feeds['token_type_ids'] = types
        logits = session.run(['logits'], feeds)[0].astype(np.float64)
        head = req['head']
        if head == 'sigmoid':
            scores = 1 / (1 + np.exp(-logits[:, 0]))
        elif head.startswith('softmax:'):
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            scores = (e / e.sum(axis=1, keepdims=True))[:, int(head.split(':')[1])]
        else:
            scores = logits[:, 0]
        real = lambda e, xs: [x for x, a in zip(xs, e.attention_mask) if a]
        return [real(e, e.ids) for e in enc], [real(e, e.type_ids) for e in enc], scores.tolist()

    if req.get('head'):
        ids, types, scores = [], [], []
        for i in range(0, len(texts), batch):
            a, b, c = score(texts[i : i + batch])
            ids += a
            types += b
            scores += c
        json.dump({'ids': ids, 'types': types, 'scores': scores}, sys.stdout)
        return

    def embed(chunk):
        enc = tok.encode_batch(chunk)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        feeds = {'input_ids': ids, 'attention_mask': mask}
        if 'token_type_ids' in names:
            feeds['token_type_ids'] = np.array([e.type_ids for e in enc], dtype=np.int64)
        hidden = session.run(['last_hidden_state'], feeds)[0]
        if req.get('pooling', 'mean') == 'cls':
            pooled = hidden[:, 0, :]
        else:
            m = mask[:, :, None].astype(np.float32)
            pooled = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
        if req.get('normalize', True):
            pooled = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return [[i for i, a in zip(e.ids, e.attention_mask) if a] for e in enc], pooled

    if req.get('bench'):
        passes = []
        for _ in range(req.get('passes', 3)):
            start = time.perf_counter()
            for i in range(0, len(texts), batch):
                embed(texts[i : i + batch])
            passes.append(time.perf_counter() - start)
        json.dump({'seconds': passes}, sys.stdout)
        return
    ids, vectors = [], []
    for i in range(0, len(texts), batch):
        chunk_ids, pooled = embed(texts[i : i + batch])
        ids += chunk_ids
        vectors += pooled.tolist()
    json.dump({'ids': ids, 'embeddings': vectors}, sys.stdout)


if __name__ == '__main__':
    main()
