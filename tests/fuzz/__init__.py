"""Bounded fuzzing of the compiler's front door (``lower``) and the runtime's (``runtime.load``).

Two engines over the same mutation operators (``mutators.py``): a seeded mutator (``test_fuzz.py``, and
``python -m tests.fuzz --models N --artifacts M [--seed S] [--real-cc]``; ``LOWERING_FUZZ_CASES`` scales
the test run) and hypothesis (``strategies.py``: drawn mutation plans that shrink to a minimal failing one;
``test_hypothesis.py`` under the bounded, derandomized ``ci`` profile; ``HYPOTHESIS_PROFILE=campaign`` or
``python -m tests.fuzz --hypothesis N`` for a long campaign). Each prints its outcome counts.
"""
