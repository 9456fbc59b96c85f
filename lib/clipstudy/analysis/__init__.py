"""Analysis of a profile's runs: ``stats`` (paired intervals, stability, spikes), ``claims`` (the
audit), ``plots`` (figures), ``report`` (tables and the HTML report). No TensorFlow is needed here
except to count the seed CNN's FLOPs for claim 4."""
