"""Discrimination, the second stage: the student answers the Cache Pool, and the referee compares its
answers with the teacher's, in both orders, to find the items the student still gets wrong (hard)
and those it gets right (easy).

verdicts:       the total parser of the referee's reply, and the quoting of the answers it judges
judging:        the referee's requests, both-order aggregation, the hard/easy split, the row and report
stage:          a shard of judgments over the run's store, and the stage's figures
referee_check:  a labelled check that a referee prefers the teacher's answer to a clearly worse one
"""
