"""The X-ray simulation: CT import, the phantom, cone-beam geometry, projector, DRRs.

Imports nothing from the model, training or sampling side (tests/layout_test.py).
"""
