"""Imitation, the first stage of an iteration: the teacher answers the Train Pool (every instruction
once, reused across iterations through the response store) and the student is fine-tuned on the
answers (`lion_core.student` runs the fine-tune).

answers:      the answers' row type and schema, the teacher's requests, a shard of answers
training_set: what a fine-tune starts from and trains on (`training.init_from`)
"""
