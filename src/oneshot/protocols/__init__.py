"""End-to-end evaluation protocols for the photograph datasets (faces, steel defects) and their baselines.

Used by ``benchmarks/faces_att.py``, ``benchmarks/defects_neu.py`` and ``oneshot demo faces``.
"""
