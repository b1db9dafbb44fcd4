"""Bounded fuzzing of the compiler's front door (``lower``) and the runtime's (``runtime.load``).

A seeded mutator, no extra dependency. ``test_fuzz.py`` runs a few hundred cases in the normal test run;
``python -m tests.fuzz --models N --artifacts M [--seed S] [--real-cc]`` runs a longer campaign and prints
the outcome counts (set ``LOWERING_FUZZ_CASES`` to scale the test run).
"""
