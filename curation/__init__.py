"""Curation: corpus readers, the record data model, instruction JSONL, sampling, and (later) IFD filtering."""
