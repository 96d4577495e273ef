"""The exercise checks of each lesson: ``lessonNN.py`` for ``notebooks/NN_*.ipynb``.

Each check returns a :class:`sessionlab.checks.Verdict` (one ✅/❌ line) and never raises;
see the README section "Coursework" for the format the lessons follow.
"""
