"""The grading kit: what the hidden tests of every assignment share (trusted process only).

- ``calls``: calling the student's graded functions in the worker, watched for the library calls that do their
  job (the per-assignment table of those calls is data: ``hidden_tests/<id>/forbidden.toml``).
- ``checks``: ``check_output``, one tolerance policy for every assignment.
- ``controls``: the trained tests' controls (shuffled and initial weights) and verdict.
- ``counterfactual``: training data with secretly renamed classes, so that passing needs learning.
- ``coco_reference``: pycocotools' COCOeval on in-memory data.
- ``detection``: the detectors' structure and trained tests (a3, a4).
"""
