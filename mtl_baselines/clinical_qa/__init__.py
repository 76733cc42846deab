"""Multi-task clinical QA ("Clinical QA 2.0: Multi-Task Learning for Answer Extraction and Categorization"):
answer-span extraction with answer categorisation on an encoder whose lower layers are shared and whose upper
layers are copied per task, against QA-only and classification-only baselines.

    bioselect mtl qa --corpus ../shared/data/re/BioRED --model ~/.cache/offline-models/minilm-l6 \\
        --variant mtl --seed 0 --output runs/qa/biored_mtl_s0
    bioselect mtl qa-study --config configs/qa_study_biored.yaml

Modules: :mod:`.data` (templated BioRED questions, the emrQA reader, SQuAD sets, split by document, encoder
windows with a document stride), :mod:`.model` (``ClinicalQA`` and its builder), :mod:`.losses`
(``λ_QA L_QA + λ_cls Σ w_i L_i``), :mod:`.metrics` (EM, token F1, accuracy, weighted F1), :mod:`.trainer` (one run)
and the commands :mod:`.train` and :mod:`.study`. See docs/clinical_qa.md.
"""
