"""The book's experiments: data, models, training loops, cached runs, verdicts and plots.

Nothing else in normtext imports this package; it imports the layers and the
testing harness. The chapter studies (``layer_norm_study``, ``more_norms``)
hold the code of one chapter each.
"""
