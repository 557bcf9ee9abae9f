"""What every training loop here shares (:mod:`rescore.train.scaffold`): a time budget, a held-out split, early
stopping on the held-out figure, atomic checkpoints, the device and bf16 autocast. The CTC head
(``rescore.recognize.ctc_train``), deep fusion (``rescore.deep.train``) and the corrector's LoRA adapter
(``rescore.correct.lora``) keep only what is their own: data, loss and what they save.
"""
