/* The global-state C API that PETSc's TSTrajectory "memory" scheduler calls
 * (src/ts/trajectory/impls/memory/trajmemory.c).  Implemented by
 * revolve_petsc.cpp on top of the Griewank-Walther Revolve C++ class, whose
 * sources scripts/install.sh takes from the pyrevolve sdist at install time.
 *
 * revolve_action returns PETSc's action codes:
 *   1 advance, 2 store in RAM, 3 first turn, 4 forward-and-reverse (you turn),
 *   5 restore from RAM, 6 terminate, 7 store on disk, 8 restore from disk,
 *  -1 error.
 * The revolve2_* family drives a second, independent schedule (PETSc's
 * two-level RAM+disk scheme). */
#ifndef PNODE_REVOLVE_C_H
#define PNODE_REVOLVE_C_H

#ifdef __cplusplus
extern "C" {
#endif

void revolve_reset(void);
void revolve_create_offline(int steps, int snaps);
void revolve_create_online(int snaps);
void revolve_create_multistage(int steps, int snaps, int snaps_ram);
int  revolve_action(int *check, int *capo, int *fine, int snaps, int *info, int *where);
void revolve_turn(int final, int *capo, int *fine);

void revolve2_reset(void);
void revolve2_create_offline(int steps, int snaps);
int  revolve2_action(int *check, int *capo, int *fine, int snaps, int *info, int *where);

#ifdef __cplusplus
}
#endif

#endif
