"""The cluster side: storage (the run volume, inputs by URI), Kubernetes objects behind one small
interface (:mod:`.cluster`), TrainJobs, and the InferenceService rollout. Never imports kfp."""
