"""SRU-NER (Ruano et al., ACL 2025): transition-based nested NER trained on many partially annotated corpora.

    bioselect mtl sru \\
        --corpora genia=../shared/data/nested_ner/GENIA/dev.jsonlines,ncbi=../shared/data/ner/NCBI-disease \\
        --model ~/.cache/offline-models/minilm-l6 --steps 2000 --output runs/sru/genia_ncbi

Modules: :mod:`.actions` (nested mentions <-> TR/RE/SH/EOA actions, crossing spans; pure), :mod:`.model` (the
Slot-based Recurrent Unit, the action head, the masked loss, batched decoding), :mod:`.data` (type renaming,
inverse-size sampling, encoding, disjoint/merged evaluation views), :mod:`.trainer` (one run) and the command
:mod:`.train`. See docs/sru_ner.md.
"""
