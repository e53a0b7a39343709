"""The book's experiments: data, models, training loops, cached runs, verdicts and plots.

Nothing else in normtext imports this package; it imports the layers, the
testing harness and the distributed launcher.

* ``data``, ``models``, ``gluon_models``: data that installs with pip, and the networks;
* ``train``: the training loops, the cache of runs, runs over seeds and their summaries;
* ``verdict``: the book's one rule for "A beats B" (a paired comparison over seeds);
* ``plot``, ``notebook``: figures, and each chapter's opening ``setup()`` and small tables;
* ``sources``: the source documents' own code, kept runnable;
* the chapter studies (``layer_norm_study``, ``more_norms``, ``data_parallel``, ...)
  hold the code of one chapter each.
"""
