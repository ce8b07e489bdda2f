"""Puts a classification head on an encoder export, for checking the scoring path end to end.

    python models/add_head.py <encoder-dir> <out-dir> [classes=2] [seed=0]

out-dir gets tokenizer.json (copied) and model.onnx = the encoder + logits[N, classes] =
CLS hidden state × W + b, with W, b drawn from numpy's RandomState(seed) (scale 0.1): a real
graph with a real tokenizer whose scores mean nothing — the reward models and classifiers
users bring have trained heads; this one exists so tests can compare Node's scores with
Python onnxruntime's on the same file.
"""

import os
import shutil
import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper


def main() -> None:
    src, out = sys.argv[1], sys.argv[2]
    classes = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    seed = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    model = onnx.load(f'{src}/model.onnx')
    graph = model.graph
    hidden = hidden_size(model)
    rng = np.random.RandomState(seed)
    w = (rng.standard_normal((hidden, classes)) * 0.1).astype(np.float32)
    b = (rng.standard_normal(classes) * 0.1).astype(np.float32)
    graph.initializer.extend(
        [numpy_helper.from_array(w, 'head_w'), numpy_helper.from_array(b, 'head_b'), numpy_helper.from_array(np.array(0, dtype=np.int64), 'head_cls')]
    )
    graph.node.extend(
        [
            helper.make_node('Gather', ['last_hidden_state', 'head_cls'], ['head_pooled'], axis=1),
            helper.make_node('MatMul', ['head_pooled', 'head_w'], ['head_mm']),
            helper.make_node('Add', ['head_mm', 'head_b'], ['logits']),
        ]
    )
    graph.output.append(helper.make_tensor_value_info('logits', onnx.TensorProto.FLOAT, ['batch', classes]))
    versions = [p for p in model.metadata_props if p.key == 'version']
    if versions:
        versions[0].value = f'{versions[0].value}+head{classes}-seed{seed}'
    else:
        model.metadata_props.add(key='version', value=f'{os.path.basename(os.path.normpath(src))}+head{classes}-seed{seed}')

    os.makedirs(out, exist_ok=True)
    onnx.save(model, f'{out}/model.onnx')
    for name in ('tokenizer.json', 'tokenizer_config.json'):
        if os.path.exists(f'{src}/{name}'):
            shutil.copy(f'{src}/{name}', f'{out}/{name}')


def hidden_size(model) -> int:
    """The encoder's width: metadata "hidden_size" (models/export_bert_onnx.py writes it), else
    the last dimension of last_hidden_state (as in the Maven jar's export)."""
    for p in model.metadata_props:
        if p.key == 'hidden_size':
            return int(p.value)
    for o in model.graph.output:
        if o.name == 'last_hidden_state':
            last = o.type.tensor_type.shape.dim[-1]
            if last.dim_value > 0:
                return last.dim_value
    raise SystemExit('model.onnx: no hidden_size metadata and no fixed last dimension of last_hidden_state')


if __name__ == '__main__':
    main()
