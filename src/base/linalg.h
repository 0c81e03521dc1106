// linalg.h — small dense linear algebra in double precision for the few
// places that need it (Arrow's prototypes, CMA-ES's covariance).
#ifndef RM_BASE_LINALG_H
#define RM_BASE_LINALG_H

// Eigen-decomposition of the symmetric n x n matrix a (row-major) by cyclic
// Jacobi rotations: a ends diagonal (its eigenvalues on the diagonal, in no
// particular order), v [n, n] holds the eigenvectors as columns.
void rm_sym_eigen(double *a, double *v, int n);
#endif
