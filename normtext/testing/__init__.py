"""How normtext checks itself: the parity harness, its tolerances and the numerics study.

* :mod:`normtext.testing.compare`: :func:`~normtext.testing.compare.compare_layers`
  runs two layers side by side (output, gradients, running statistics, eval
  output) and raises when an error exceeds its tolerance; the float64 reference
  layers it compares against;
* :mod:`normtext.testing.compare_more`: the same for weight normalization and
  gradient clipping;
* :mod:`normtext.testing.registry`: every norm as a row (its built-in, its
  normtext layer, its float64 reference), read by ``check``, ``bench`` and the
  numerics study;
* :mod:`normtext.testing.numerics`: errors against float64 at large means, long
  rows and low precision.
"""
