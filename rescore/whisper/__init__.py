"""Whisper's parts that several rooms share: the weight reader, the tokenizer, encoder states, the teacher-forced
decoder. The recognizers (``rescore.recognize``), acoustic scoring (``rescore.score``) and deep fusion
(``rescore.deep``) import them from here, never from one another.
"""
