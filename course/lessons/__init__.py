"""What serves one notebook only: one module per notebook, named after it (``notebooks/03_auxiliary_classifiers.ipynb``
-> ``course.lessons.auxiliary_classifiers``): its experiment drivers, tables and figures.

The library (``course.data``, ``course.models``, ``course.training``, ``course.seeds``, ``course.counting``, ...)
never imports from here; a lesson module may use the library.
"""
