"""Encoder baselines (token MTL, SRU-NER, clinical QA) scored by :mod:`curation.scoring`."""
