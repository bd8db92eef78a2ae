//! ONNX messages (`onnx.proto`, IR version 8) built on the wire encoder: tensors, value infos,
//! nodes with integer attributes, the graph and the model. Field numbers are those of
//! `onnx.proto`; only the fields burnq writes are here.

use crate::proto::Message;

/// `TensorProto.DataType` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    /// `FLOAT` (1): 32-bit IEEE float.
    Float = 1,
    /// `UINT8` (2).
    Uint8 = 2,
    /// `INT32` (6).
    Int32 = 6,
    /// `INT64` (7).
    Int64 = 7,
}

/// A constant tensor (graph initializer): name, element type, dimensions and the little-endian
/// element bytes (`raw_data`).
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Name the nodes refer to.
    pub name: String,
    /// Element type.
    pub data_type: DataType,
    /// Dimensions (empty for a scalar).
    pub dims: Vec<i64>,
    /// Elements, little-endian, row-major.
    pub raw: Vec<u8>,
}

impl Tensor {
    /// A `u8` tensor.
    pub fn u8(name: &str, dims: &[i64], values: &[u8]) -> Self {
        Self::new(name, DataType::Uint8, dims, values.to_vec())
    }

    /// An `i32` tensor.
    pub fn i32(name: &str, dims: &[i64], values: &[i32]) -> Self {
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self::new(name, DataType::Int32, dims, raw)
    }

    /// An `i64` tensor.
    pub fn i64(name: &str, dims: &[i64], values: &[i64]) -> Self {
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self::new(name, DataType::Int64, dims, raw)
    }

    /// An `f32` tensor.
    pub fn f32(name: &str, dims: &[i64], values: &[f32]) -> Self {
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self::new(name, DataType::Float, dims, raw)
    }

    fn new(name: &str, data_type: DataType, dims: &[i64], raw: Vec<u8>) -> Self {
        Self {
            name: name.to_owned(),
            data_type,
            dims: dims.to_vec(),
            raw,
        }
    }

    /// `TensorProto`: dims (1), data_type (2), name (8), raw_data (9).
    fn encode(&self) -> Message {
        let mut m = Message::new();
        if !self.dims.is_empty() {
            m.packed_ints(1, &self.dims);
        }
        m.int(2, self.data_type as i64)
            .string(8, &self.name)
            .bytes(9, &self.raw);
        m
    }
}

/// One dimension of a graph input or output: fixed, or named (e.g. the batch size).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// `dim_value`.
    Fixed(i64),
    /// `dim_param`.
    Named(String),
}

/// A graph input or output: `ValueInfoProto` with a tensor type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueInfo {
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub data_type: DataType,
    /// Shape.
    pub dims: Vec<Dim>,
    /// What the tensor holds (`doc_string`).
    pub doc: String,
}

impl ValueInfo {
    /// `ValueInfoProto`: name (1), type (2) = `TypeProto{tensor_type (1) = {elem_type (1),
    /// shape (2) = TensorShapeProto{dim (1) = {dim_value (1) | dim_param (2)}}}}`, doc (3).
    fn encode(&self) -> Message {
        let mut shape = Message::new();
        for d in &self.dims {
            let mut dim = Message::new();
            match d {
                Dim::Fixed(v) => dim.int(1, *v),
                Dim::Named(s) => dim.string(2, s),
            };
            shape.message(1, &dim);
        }
        let mut tensor_type = Message::new();
        tensor_type.int(1, self.data_type as i64).message(2, &shape);
        let mut type_proto = Message::new();
        type_proto.message(1, &tensor_type);
        let mut m = Message::new();
        m.string(1, &self.name)
            .message(2, &type_proto)
            .string(3, &self.doc);
        m
    }
}

/// An operator application: `NodeProto` with integer-list attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Operator (`op_type`), default domain.
    pub op_type: &'static str,
    /// Node name.
    pub name: String,
    /// Input tensor names, in the operator's order.
    pub inputs: Vec<String>,
    /// Output tensor names.
    pub outputs: Vec<String>,
    /// `(name, ints)` attributes, e.g. `("kernel_shape", [2, 2])`.
    pub int_lists: Vec<(&'static str, Vec<i64>)>,
    /// `(name, int)` attributes, e.g. `("axis", 1)`.
    pub ints: Vec<(&'static str, i64)>,
}

impl Node {
    /// A node without attributes.
    pub fn new(op_type: &'static str, name: &str, inputs: &[&str], outputs: &[&str]) -> Self {
        Self {
            op_type,
            name: name.to_owned(),
            inputs: inputs.iter().map(|s| (*s).to_owned()).collect(),
            outputs: outputs.iter().map(|s| (*s).to_owned()).collect(),
            int_lists: Vec::new(),
            ints: Vec::new(),
        }
    }

    /// Adds an `INTS` attribute.
    pub fn with_ints(mut self, name: &'static str, values: &[i64]) -> Self {
        self.int_lists.push((name, values.to_vec()));
        self
    }

    /// Adds an `INT` attribute.
    pub fn with_int(mut self, name: &'static str, value: i64) -> Self {
        self.ints.push((name, value));
        self
    }

    /// `NodeProto`: input (1), output (2), name (3), op_type (4), attribute (5) =
    /// `AttributeProto{name (1), i (3), ints (8, packed), type (20): INT = 2, INTS = 7}`.
    fn encode(&self) -> Message {
        let mut m = Message::new();
        for i in &self.inputs {
            m.string(1, i);
        }
        for o in &self.outputs {
            m.string(2, o);
        }
        m.string(3, &self.name).string(4, self.op_type);
        for (name, values) in &self.int_lists {
            let mut a = Message::new();
            a.string(1, name).packed_ints(8, values).int(20, 7);
            m.message(5, &a);
        }
        for (name, value) in &self.ints {
            let mut a = Message::new();
            a.string(1, name).int(3, *value).int(20, 2);
            m.message(5, &a);
        }
        m
    }
}

/// A whole model: one graph in the default domain at one opset version.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// Graph name.
    pub graph_name: String,
    /// Default-domain opset version.
    pub opset: i64,
    /// Nodes in topological order.
    pub nodes: Vec<Node>,
    /// Constant tensors.
    pub initializers: Vec<Tensor>,
    /// Graph inputs.
    pub inputs: Vec<ValueInfo>,
    /// Graph outputs.
    pub outputs: Vec<ValueInfo>,
    /// Model description (`doc_string`).
    pub doc: String,
    /// `metadata_props` key/value pairs.
    pub metadata: Vec<(String, String)>,
}

/// ONNX IR version written (ONNX 1.10+, read by every current runtime).
pub const IR_VERSION: i64 = 8;

impl Model {
    /// Serializes to the bytes of an `.onnx` file: `ModelProto{ir_version (1),
    /// producer_name (2), producer_version (3), doc_string (6), graph (7), opset_import (8),
    /// metadata_props (14)}`, `GraphProto{node (1), name (2), initializer (5), input (11),
    /// output (12)}`.
    pub fn encode(&self) -> Vec<u8> {
        let mut graph = Message::new();
        for n in &self.nodes {
            graph.message(1, &n.encode());
        }
        graph.string(2, &self.graph_name);
        for t in &self.initializers {
            graph.message(5, &t.encode());
        }
        for v in &self.inputs {
            graph.message(11, &v.encode());
        }
        for v in &self.outputs {
            graph.message(12, &v.encode());
        }
        let mut opset = Message::new();
        opset.string(1, "").int(2, self.opset);
        let mut m = Message::new();
        m.int(1, IR_VERSION)
            .string(2, "burnq")
            .string(3, env!("CARGO_PKG_VERSION"))
            .string(6, &self.doc)
            .message(7, &graph)
            .message(8, &opset);
        for (key, value) in &self.metadata {
            let mut entry = Message::new();
            entry.string(1, key).string(2, value);
            m.message(14, &entry);
        }
        m.into_bytes()
    }
}
