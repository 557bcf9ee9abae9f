"""Choosing among the hypotheses: the weighted ``Ranker`` and its scores (``ranker``), weights tuned by grid search
(``grid``) or learned pairwise (``learned``) over list features (``features``), and ``rescore tune`` as a library
call that reports honestly (``tuning``).
"""
