import protobuf from 'protobufjs';

/**
 * Writes small ONNX models from TypeScript, so training a scorer or an encoder needs no Python.
 * The schema below is the subset of onnx.proto (field numbers as in ONNX 1.x) these models use;
 * anything that reads ONNX (onnxruntime, netron, onnx.load) reads the result.
 */
const onnxSchema = {
  nested: {
    onnx: {
      nested: {
        ModelProto: {
          fields: {
            ir_version: { type: 'int64', id: 1 },
            opset_import: { rule: 'repeated', type: 'OperatorSetIdProto', id: 8 },
            producer_name: { type: 'string', id: 2 },
            producer_version: { type: 'string', id: 3 },
            domain: { type: 'string', id: 4 },
            model_version: { type: 'int64', id: 5 },
            doc_string: { type: 'string', id: 6 },
            graph: { type: 'GraphProto', id: 7 },
            metadata_props: { rule: 'repeated', type: 'StringStringEntryProto', id: 14 },
          },
        },
        StringStringEntryProto: {
          fields: { key: { type: 'string', id: 1 }, value: { type: 'string', id: 2 } },
        },
        OperatorSetIdProto: {
          fields: { domain: { type: 'string', id: 1 }, version: { type: 'int64', id: 2 } },
        },
        GraphProto: {
          fields: {
            node: { rule: 'repeated', type: 'NodeProto', id: 1 },
            name: { type: 'string', id: 2 },
            initializer: { rule: 'repeated', type: 'TensorProto', id: 5 },
            doc_string: { type: 'string', id: 10 },
            input: { rule: 'repeated', type: 'ValueInfoProto', id: 11 },
            output: { rule: 'repeated', type: 'ValueInfoProto', id: 12 },
          },
        },
        NodeProto: {
          fields: {
            input: { rule: 'repeated', type: 'string', id: 1 },
            output: { rule: 'repeated', type: 'string', id: 2 },
            name: { type: 'string', id: 3 },
            op_type: { type: 'string', id: 4 },
            attribute: { rule: 'repeated', type: 'AttributeProto', id: 5 },
            doc_string: { type: 'string', id: 6 },
            domain: { type: 'string', id: 7 },
          },
        },
        AttributeProto: {
          fields: {
            name: { type: 'string', id: 1 },
            f: { type: 'float', id: 2 },
            i: { type: 'int64', id: 3 },
            s: { type: 'bytes', id: 4 },
            t: { type: 'TensorProto', id: 5 },
            floats: { rule: 'repeated', type: 'float', id: 7 },
            ints: { rule: 'repeated', type: 'int64', id: 8 },
            doc_string: { type: 'string', id: 13 },
            type: { type: 'AttributeType', id: 20 },
          },
          nested: {
            AttributeType: {
              values: { UNDEFINED: 0, FLOAT: 1, INT: 2, STRING: 3, TENSOR: 4, GRAPH: 5, FLOATS: 6, INTS: 7 },
            },
          },
        },
        TensorProto: {
          fields: {
            dims: { rule: 'repeated', type: 'int64', id: 1 },
            data_type: { type: 'int32', id: 2 },
            float_data: { rule: 'repeated', type: 'float', id: 4, options: { packed: true } },
            name: { type: 'string', id: 8 },
            raw_data: { type: 'bytes', id: 9 },
            doc_string: { type: 'string', id: 12 },
          },
        },
        ValueInfoProto: {
          fields: {
            name: { type: 'string', id: 1 },
            type: { type: 'TypeProto', id: 2 },
            doc_string: { type: 'string', id: 3 },
          },
        },
        TypeProto: {
          oneofs: { value: { oneof: ['tensor_type'] } },
          fields: { tensor_type: { type: 'Tensor', id: 1 }, denotation: { type: 'string', id: 6 } },
          nested: {
            Tensor: {
              fields: { elem_type: { type: 'int32', id: 1 }, shape: { type: 'TensorShapeProto', id: 2 } },
            },
          },
        },
        TensorShapeProto: {
          fields: { dim: { rule: 'repeated', type: 'Dimension', id: 1 } },
          nested: {
            Dimension: {
              oneofs: { value: { oneof: ['dim_value', 'dim_param'] } },
              fields: {
                dim_value: { type: 'int64', id: 1 },
                dim_param: { type: 'string', id: 2 },
                denotation: { type: 'string', id: 3 },
              },
            },
          },
        },
      },
    },
  },
};

const ModelProto = protobuf.Root.fromJSON(onnxSchema).lookupType('onnx.ModelProto');

/** ONNX IR 8 with the default-domain opset 17: every onnxruntime since 1.13 loads it. */
const IR_VERSION = 8;
const OPSET = 17;
const FLOAT = 1;
const ATTR_INT = 2;
const ATTR_INTS = 7;
/** Smallest squared norm an embedding is divided by, so an all-zero input maps to zeros. */
const NORM_EPSILON = 1e-12;

export interface LinearModelSpec {
  /** One weight per input feature (length `inputDim`). */
  weights: Float32Array;
  bias: number;
  inputDim: number;
  /** "logistic": score = sigmoid(x·w + b) in (0, 1); "linear": score = x·w + b. */
  output: 'logistic' | 'linear';
  /** Stored as metadata `version`; the scorer records it with every score it gives. */
  version?: string;
}

/**
 * A linear scorer: input "features" float[N, inputDim] → MatMul W[inputDim, 1] → Add b →
 * (Sigmoid) → output "score" float[N, 1].
 */
export function linearModelOnnx(spec: LinearModelSpec): Uint8Array {
  if (spec.weights.length !== spec.inputDim) throw new Error(`linear model: ${spec.weights.length} weights for inputDim ${spec.inputDim}`);
  const nodes = [node('MatMul', ['features', 'W'], ['xw']), node('Add', ['xw', 'b'], [spec.output === 'logistic' ? 'logit' : 'score'])];
  if (spec.output === 'logistic') nodes.push(node('Sigmoid', ['logit'], ['score']));
  return encodeModel({
    name: 'linear-scorer',
    nodes,
    initializers: [floatTensor('W', [spec.inputDim, 1], spec.weights), floatTensor('b', [1], Float32Array.of(spec.bias))],
    input: valueInfo('features', ['N', spec.inputDim]),
    output: valueInfo('score', ['N', 1]),
    metadata: spec.version === undefined ? {} : { version: spec.version },
  });
}

export interface ProjectionEncoderSpec {
  /** Row-major [inputDim, outputDim]. */
  matrix: Float32Array;
  inputDim: number;
  outputDim: number;
  version?: string;
}

/**
 * A text encoder: input "features" float[N, inputDim] → MatMul P[inputDim, outputDim] → l2
 * normalisation per row (x / sqrt(max(Σx², ε)), so a zero row stays zero) → output
 * "embedding" float[N, outputDim].
 */
export function projectionEncoderOnnx(spec: ProjectionEncoderSpec): Uint8Array {
  if (spec.matrix.length !== spec.inputDim * spec.outputDim) {
    throw new Error(`projection encoder: matrix has ${spec.matrix.length} entries, expected ${spec.inputDim}×${spec.outputDim}`);
  }
  return encodeModel({
    name: 'projection-encoder',
    nodes: [
      node('MatMul', ['features', 'P'], ['projected']),
      node('ReduceSumSquare', ['projected'], ['squares'], [intsAttr('axes', [1]), intAttr('keepdims', 1)]),
      node('Max', ['squares', 'eps'], ['clamped']),
      node('Sqrt', ['clamped'], ['norm']),
      node('Div', ['projected', 'norm'], ['embedding']),
    ],
    initializers: [floatTensor('P', [spec.inputDim, spec.outputDim], spec.matrix), floatTensor('eps', [1], Float32Array.of(NORM_EPSILON))],
    input: valueInfo('features', ['N', spec.inputDim]),
    output: valueInfo('embedding', ['N', spec.outputDim]),
    metadata: spec.version === undefined ? {} : { version: spec.version },
  });
}

/** The metadata_props of an ONNX model (e.g. `version`), read without loading a session. */
export function onnxMetadata(bytes: Uint8Array): Record<string, string> {
  const model = ModelProto.toObject(ModelProto.decode(bytes), { defaults: true }) as { metadata_props: Array<{ key: string; value: string }> };
  return Object.fromEntries(model.metadata_props.map((p) => [p.key, p.value]));
}

interface GraphSpec {
  name: string;
  nodes: object[];
  initializers: object[];
  input: object;
  output: object;
  metadata: Record<string, string>;
}

function encodeModel(graph: GraphSpec): Uint8Array {
  const message = ModelProto.fromObject({
    ir_version: IR_VERSION,
    producer_name: 'flywheel',
    opset_import: [{ domain: '', version: OPSET }],
    graph: { name: graph.name, node: graph.nodes, initializer: graph.initializers, input: [graph.input], output: [graph.output] },
    metadata_props: Object.entries(graph.metadata).map(([key, value]) => ({ key, value })),
  });
  return ModelProto.encode(message).finish();
}

function node(opType: string, input: string[], output: string[], attribute: object[] = []): object {
  return { op_type: opType, input, output, name: `${opType}_${output[0]}`, attribute };
}

function intAttr(name: string, i: number): object {
  return { name, type: ATTR_INT, i };
}

function intsAttr(name: string, ints: number[]): object {
  return { name, type: ATTR_INTS, ints };
}

/** Weights go in raw_data as little-endian float32, the compact encoding ONNX prescribes. */
function floatTensor(name: string, dims: number[], values: Float32Array): object {
  const raw = new Uint8Array(values.length * 4);
  const view = new DataView(raw.buffer);
  values.forEach((v, i) => view.setFloat32(i * 4, v, true));
  return { name, dims, data_type: FLOAT, raw_data: raw };
}

function valueInfo(name: string, shape: Array<string | number>): object {
  return {
    name,
    type: {
      tensor_type: {
        elem_type: FLOAT,
        shape: { dim: shape.map((d) => (typeof d === 'string' ? { dim_param: d } : { dim_value: d })) },
      },
    },
  };
}
