"""TFDS builders behind `ensembles.training.data`: embedded datasets and offline external preparation.

`builders` registers the embedded datasets (`digits`, `mnist5k`, `mnist1d`) with TFDS on import;
`external` prepares stock TFDS image datasets from hand-downloaded archives without TensorFlow.
Use them through `ensembles.training.data.load_dataset`.
"""
