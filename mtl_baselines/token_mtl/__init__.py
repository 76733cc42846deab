"""Token-level multi-task, multi-granularity NER (the PK-NER study's adaptation of Tong et al., 2021).

One encoder shared by four heads (hard parameter sharing): token NER (BIO), token multi-token classification
(outside / single-token entity / multi-token entity), sentence binary classification (any entity) and sentence
mention-count classification (0, 1, 2, 3+); the single-task baseline keeps the NER head alone. Losses are combined
with fixed weights or Kendall et al.'s homoscedastic uncertainty weighting (:mod:`.losses`). Predictions are
span files scored by :mod:`curation.scoring`, like the generators'.

    bioselect mtl train --corpus ../shared/data/ner/PK-relations --model ~/.cache/offline-models/minilm-l6 \\
        --variant uw_sym --fraction 0.25 --output runs/mtl/pk_uw_sym
    bioselect mtl study --corpus ../shared/data/ner/PK-relations --model ~/.cache/offline-models/minilm-l6 \\
        --fractions 1,0.25 --seeds 1 --variants single,uw_sym --output runs/mtl_smoke

Modules: :mod:`.labels` (the four label sets, pure), :mod:`.losses` (loss variants, pure + one module),
:mod:`.model` (``TokenMTL`` and its builder), :mod:`.data` (splits, pre-training checks, encoding),
:mod:`.trainer` (one run), :mod:`.analysis` (study statistics, pure), :mod:`.report` (tables and plots), and the
commands :mod:`.train` and :mod:`.study`. See docs/mtl_baselines.md.
"""
