"""``baseliner evaluate``: labelled public data, the models the service runs, baselines, a report.

* :mod:`.adfa`, :mod:`.lidds`: datasets read in place;
* :mod:`.windows`, :mod:`.grams`: traces -> the sensor's feature vectors;
* :mod:`.scorers`: the Baseliner models under test; :mod:`.baselines`: classic ones;
* :mod:`.metrics`: AUC, detection rates, the LID-DS rule;
* :mod:`.run`, :mod:`.report`, :mod:`.cli`: the runs, the report, the CLI.
"""
