"""Runs a method's stages (methods/protocol.py `Stage`): the same resumability and
progress reports as training, for work that comes before it (GS-WGAN's critic
pretraining, the one release of DP-MERF / DP-NTK).

Every chunk of items is saved in the run folder's stage store as soon as it is done
(an interrupted stage resumes at the first missing item) under the stage's recipe (a
store of another recipe is refused). Progress lines and the store's log.jsonl say which
items were done and how fast: public information only (stage outputs and their
training losses are private or already-accounted releases, and are not logged).
"""

import time

from dpgen_jax.log import get_logger
from dpgen_jax.training.progress import format_eta


def run_stages(stages, run) -> dict:
  """Computes every missing item of every stage; returns {stage name: summary}."""
  log = get_logger()
  summaries = {}
  for stage in stages:
    store = run.stage_store(stage)
    store.check_or_create()
    total = stage.num_items()
    todo = store.missing(total, stage.chunk_size())
    done = total - sum(end - start for start, end in todo)
    if not todo:
      log.info("Stage %s: all %d items are already in %s.", stage.name, total, store.directory)
    t0 = time.time()
    for start, end in todo:
      t = time.time()
      store.save(start, end, stage.run_items(start, end))
      seconds = time.time() - t
      done += end - start
      store.log({"start": start, "end": end, "seconds": seconds})
      rate = (done - (total - sum(e - s for s, e in todo))) / max(time.time() - t0, 1e-9)
      log.info("Stage %s: items %d..%d done (%d/%d) in %.0f s | %.2f items/min | ETA %s",
               stage.name, start, end - 1, done, total, seconds, 60.0 * rate,
               format_eta((total - done) / max(rate, 1e-9)))
    summaries[stage.name] = dict(items=done, of=total, directory=store.directory,
                                 wall_time_s=time.time() - t0)
  return summaries
