#include <cblas.h>
// Thread count is set once by the tensor layer.
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
