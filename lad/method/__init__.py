"""The distillation method itself, independent of how a run is driven: the gates that mix teacher
layers into targets (``gates``), the registered loss terms (``loss_terms``) and the weighted
objective over them (``losses``), the trainable unit that ties student, teacher, gate and objective
together (``distiller``), and the on-disk teacher-output cache that serves the objective what it
reads from the teacher (``teacher_cache``, ``teacher_store``)."""
