// PETSc's revolve C API (see revolve_c.h) over the Revolve C++ class.
//
// PETSc keeps one schedule (plus a second one for two-level disk stacks) in
// global state, while the C++ class is an object: each family below owns one
// instance.  revolve_create_* replaces the instance; revolve_reset() is a
// no-op on purpose: PETSc calls it whenever any trajectory that used revolve
// is destroyed, and in a process with several solvers (or a garbage collector
// destroying an old one) that would wipe the schedule another solver's
// adjoint is in the middle of.  The class's own action enum is translated into PETSc's codes, and
// RAM versus disk is decided by the class only for multistage schedules; the
// other schedules never put checkpoints on disk (the class leaves its
// placement vector unset for them).
#include "revolve.h"
#include "revolve_c.h"

namespace {

struct Slot {
  Revolve *r = nullptr;
  bool multistage = false;
  bool online = false;

  void reset() {
    delete r;
    r = nullptr;
    multistage = online = false;
  }

  int action(int *check, int *capo, int *fine, int *info, int *where) {
    if (!r) return -1;
    ACTION::action a = r->revolve();
    *check = r->getcheck();
    *capo = r->getcapo();
    *fine = r->getfine();
    *info = r->getinfo();
    const bool ram = multistage ? r->getwhere() : true;
    *where = ram ? 1 : 0;
    switch (a) {
      case ACTION::advance:   return 1;
      case ACTION::takeshot:  return ram ? 2 : 7;
      case ACTION::firsturn:  return 3;
      case ACTION::youturn:   return 4;
      case ACTION::restore:   return ram ? 5 : 8;
      case ACTION::terminate: return 6;
      default:                return -1;
    }
  }
};

Slot level1, level2;

}  // namespace

extern "C" {

void revolve_reset(void) {}

void revolve_create_offline(int steps, int snaps) {
  level1.reset();
  level1.r = new Revolve(steps, snaps);
}

void revolve_create_online(int snaps) {
  level1.reset();
  level1.r = new Revolve(snaps);
  level1.online = true;
}

void revolve_create_multistage(int steps, int snaps, int snaps_ram) {
  level1.reset();
  level1.r = new Revolve(steps, snaps, snaps_ram);
  level1.multistage = true;
}

int revolve_action(int *check, int *capo, int *fine, int snaps, int *info, int *where) {
  (void)snaps;  // fixed when the schedule was created
  return level1.action(check, capo, fine, info, where);
}

void revolve_turn(int final, int *capo, int *fine) {
  if (!level1.r) return;
  level1.r->turn(final);
  level1.online = false;
  *capo = final - 1;
  *fine = final;
}

void revolve2_reset(void) {}

void revolve2_create_offline(int steps, int snaps) {
  level2.reset();
  level2.r = new Revolve(steps, snaps);
}

int revolve2_action(int *check, int *capo, int *fine, int snaps, int *info, int *where) {
  (void)snaps;
  return level2.action(check, capo, fine, info, where);
}

}  // extern "C"
