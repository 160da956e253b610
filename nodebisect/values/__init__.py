"""Foundations every room stands on: how one value is judged and which reference value it is.

``compare`` (a value against its reference under a dtype-aware tolerance), ``noise``
(re-judged against the float64 oracle), ``graphmap`` (ONNX values <-> reference
names, segments), ``signs`` (values whose sign of zero matters), ``worst`` (the worst
element and the constants around it). The search, the diagnosis and the reports all
read them; none of them imports torch.
"""
