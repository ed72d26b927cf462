"""Generation, the third stage: the generator writes new instructions like the hard items (same domain
and kind) and the easy ones (a rarer topic of the same domain); those new enough by ROUGE-L become the
next Train Pool and join the Cache Pool.

candidates: the generator's request for one seed, the total parser of its reply, the candidates' row
rounds:     seed drawing at the hard:easy ratio, rounds until the target or the request budget
novelty:    the ROUGE-L filter (exact `rouge_score` decisions)
stage:      generation over the run's store, and the pool update
dedup:      the same filter over files (`lion dedup`)
"""
