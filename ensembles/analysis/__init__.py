"""Geometry of prediction trajectories: Bhattacharyya distances, InPCA, progress.

Public API:
  bhattacharyya(p, q=None) -> (m, m') float32 distance matrix
  bhattacharyya_paired(p, q) -> (M,) distances d_B(p[i], q[i])
  inpca(D, k=None) -> InPCA (coords, eigenvalues, explained_stress, project())
  embed_trajectories(traj, k=10, landmarks=None, split='train', outdir=None) ->
    TrajectoryEmbedding: every point of a sweep placed by landmark InPCA, streamed to Parquet
  geodesic(labels, num_classes, t), progress(p, labels), resample(traj, labels, grid),
  slerp(p, q, t), path_length(traj), tube_width(...), distance_to_mean(...),
  equal_progress_distances(...)
  factor_analysis(...), factor_table(D, members), seed_groups(members)
  plot_embedding(...), plot_explained_stress(...), embedding_figure_3d(...),
  write_embedding_html(...), point_hover(member, hparams, epoch, ...) -> the hover texts
  summarize(traj, ...) -> Analysis (computed, nothing written); write_analysis(analysis, outdir)
  analyze_trajectories(traj, outdir, ...) -> AnalysisSummary (both)
  progress_grid(progress_ExT, size) -> the equal-progress grid analyze_trajectories uses
  design: comparisons within a one-factor-at-a-time design (Label, factor_rows, init_join, ...)

The analysis reads stores through ``ensembles.store.TrajectoryStore`` and never imports the
trainer.
"""

from ensembles.analysis import design
from ensembles.analysis.distances import BC_CLIP, bhattacharyya, bhattacharyya_paired
from ensembles.analysis.embedding import InPCA, inpca
from ensembles.analysis.eigen import Eigenpairs, top_by_magnitude
from ensembles.analysis.factors import (FACTORS, Confounded, FactorRow, FactorTable,
                                        factor_analysis, factor_table, pair_factor, seed_groups)
from ensembles.analysis.geometry import (Resampled, distance_to_mean, equal_progress_distances,
                                         geodesic, ignorance, path_length, progress, resample,
                                         slerp, truth, tube_width)
from ensembles.analysis.landmarks import choose_landmarks
from ensembles.analysis.mapping import TrajectoryEmbedding, embed_trajectories
from ensembles.analysis.plots import (References, embedding_figure_3d, plot_embedding,
                                      plot_explained_stress, point_hover, write_embedding_html)
from ensembles.analysis.report import AnalysisSummary, analyze_trajectories, write_analysis
from ensembles.analysis.summary import Analysis, progress_grid, summarize

__all__ = [
    'Analysis', 'AnalysisSummary', 'BC_CLIP', 'Confounded', 'Eigenpairs', 'FACTORS', 'FactorRow',
    'FactorTable',
    'InPCA', 'References', 'Resampled', 'TrajectoryEmbedding', 'analyze_trajectories',
    'bhattacharyya', 'bhattacharyya_paired', 'choose_landmarks', 'design', 'distance_to_mean',
    'embed_trajectories', 'embedding_figure_3d', 'equal_progress_distances', 'factor_analysis',
    'factor_table', 'geodesic', 'ignorance', 'inpca', 'pair_factor', 'path_length',
    'plot_embedding', 'plot_explained_stress', 'point_hover', 'progress', 'progress_grid',
    'resample', 'seed_groups', 'slerp', 'summarize', 'top_by_magnitude', 'truth', 'tube_width',
    'write_analysis', 'write_embedding_html',
]
