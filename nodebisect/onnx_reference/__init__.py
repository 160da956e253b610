"""A second reference: an ONNX model checked against the ONNX model it was derived from (``nodebisect diff``).

The reference model runs once with every intermediate value captured (onnxruntime on
an execution provider, or ONNX's reference evaluator), and once more in float64 where
it can (each value's natural noise). Its values are keyed by the *candidate's* value
names (``mapping``: through the Casts a float16 conversion inserts, the
QuantizeLinear/DequantizeLinear pairs of QDQ, fusions that keep their outputs'
names), held in the candidate's dtypes with a tolerance that knows the candidate's
precision (``precision``), so the unchanged search and diagnosis of ``locate`` run on
them. Never imports torch.
"""
