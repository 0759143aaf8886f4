"""``baseliner evaluate``: labelled public data, the models the service runs, baselines, a report.

* :mod:`models.evaluate.adfa`, :mod:`models.evaluate.lidds`: datasets read in place;
* :mod:`models.evaluate.windows`, :mod:`models.evaluate.grams`: traces -> the sensor's feature vectors;
* :mod:`models.evaluate.scorers`: the Baseliner models under test; :mod:`models.evaluate.baselines`: classic ones;
* :mod:`models.evaluate.metrics`: AUC, detection rates, the LID-DS rule;
* :mod:`models.evaluate.run`, :mod:`models.evaluate.report`, :mod:`models.evaluate.cli`: the runs, the report, the CLI.
"""
