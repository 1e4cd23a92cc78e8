"""Kubernetes as a whereabouts store: kubeconfigs and upstream whereabouts' objects.

Everything here is pure and standard-library only (plugin processes import it):
:mod:`.miniyaml` reads the YAML that kubeconfigs are written in, :mod:`.kubeconfig`
turns one into connection settings, :mod:`.objects` builds and reads
``whereabouts.cni.cncf.io/v1alpha1`` objects exactly as Go whereabouts does,
and :mod:`.names` checks Kubernetes object names.
"""
