"""Exports a Hugging Face BERT encoder (config.json + model.safetensors) to ONNX, in plain torch.

    python models/export_bert_onnx.py <model-dir> <out.onnx> <version>

Why plain torch and not `transformers`/`optimum`: torch and onnx are already in the project's
cached venv (python/setup-venv.sh), while transformers would add another install to every cold
CI run; BERT's forward is a few lines (embeddings, N post-LayerNorm encoder layers with exact-erf
GELU), written here exactly as transformers' BertModel computes it in eval mode (no dropout).

The graph's contract (what pipeline/text-models.ts loads):
  inputs   input_ids int64[batch, seq], attention_mask int64[batch, seq], token_type_ids int64[batch, seq]
  output   last_hidden_state float32[batch, seq, hidden]
  metadata "version" (recorded with every score), "hidden_size"
Pooling (mean or CLS), normalisation and the scoring head are done by the caller, so one export
serves an encoder and a classifier alike.
"""

import json
import math
import sys

import torch
from safetensors.torch import load_file


class Bert(torch.nn.Module):
    def __init__(self, config: dict, weights: dict):
        super().__init__()
        self.w = {k: v.float() for k, v in weights.items()}
        for k, v in self.w.items():
            self.register_buffer(k.replace('.', '__'), v, persistent=False)
        self.layers = config['num_hidden_layers']
        self.heads = config['num_attention_heads']
        self.hidden = config['hidden_size']
        self.eps = config.get('layer_norm_eps', 1e-12)
        if config.get('hidden_act', 'gelu') != 'gelu':
            raise SystemExit(f"unsupported hidden_act {config.get('hidden_act')!r} (only exact gelu)")
        if config.get('position_embedding_type', 'absolute') != 'absolute':
            raise SystemExit('unsupported position_embedding_type (only absolute)')

    def p(self, name: str) -> torch.Tensor:
        return getattr(self, name.replace('.', '__'))

    def ln(self, x, prefix):
        return torch.nn.functional.layer_norm(x, (self.hidden,), self.p(prefix + '.weight'), self.p(prefix + '.bias'), self.eps)

    def lin(self, x, prefix):
        return torch.nn.functional.linear(x, self.p(prefix + '.weight'), self.p(prefix + '.bias'))

    def forward(self, input_ids, attention_mask, token_type_ids):
        b, s = input_ids.shape
        positions = torch.arange(s, device=input_ids.device).unsqueeze(0)
        x = (
            torch.nn.functional.embedding(input_ids, self.p('embeddings.word_embeddings.weight'))
            + torch.nn.functional.embedding(positions, self.p('embeddings.position_embeddings.weight'))
            + torch.nn.functional.embedding(token_type_ids, self.p('embeddings.token_type_embeddings.weight'))
        )
        x = self.ln(x, 'embeddings.LayerNorm')
        # transformers' extended mask: 0 where attended, the dtype's minimum where padded.
        mask = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * torch.finfo(torch.float32).min
        dh = self.hidden // self.heads
        for i in range(self.layers):
            pre = f'encoder.layer.{i}'

            def split(t):
                return t.view(b, s, self.heads, dh).transpose(1, 2)

            q = split(self.lin(x, pre + '.attention.self.query'))
            k = split(self.lin(x, pre + '.attention.self.key'))
            v = split(self.lin(x, pre + '.attention.self.value'))
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(dh) + mask
            ctx = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2).reshape(b, s, self.hidden)
            x = self.ln(self.lin(ctx, pre + '.attention.output.dense') + x, pre + '.attention.output.LayerNorm')
            h = torch.nn.functional.gelu(self.lin(x, pre + '.intermediate.dense'))
            x = self.ln(self.lin(h, pre + '.output.dense') + x, pre + '.output.LayerNorm')
        return x


def main() -> None:
    model_dir, out, version = sys.argv[1], sys.argv[2], sys.argv[3]
    config = json.load(open(f'{model_dir}/config.json'))
    weights = load_file(f'{model_dir}/model.safetensors')
    # Some checkpoints prefix every name with "bert." (BertForX); the encoder's own names have none.
    weights = {k[5:] if k.startswith('bert.') else k: v for k, v in weights.items()}
    model = Bert(config, weights).eval()
    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=torch.int64)
    mask = (ids != 0).to(torch.int64)
    types = torch.zeros_like(ids)
    axes = {0: 'batch', 1: 'seq'}
    with torch.no_grad():
        torch.onnx.export(
            model,
            (ids, mask, types),
            out,
            input_names=['input_ids', 'attention_mask', 'token_type_ids'],
            output_names=['last_hidden_state'],
            dynamic_axes={
                'input_ids': axes,
                'attention_mask': axes,
                'token_type_ids': axes,
                'last_hidden_state': axes,
            },
            opset_version=17,
            dynamo=False,
        )
    import onnx

    graph = onnx.load(out)
    for key, value in (('version', version), ('hidden_size', str(config['hidden_size']))):
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, out)


if __name__ == '__main__':
    main()
