"""The study's orchestration, the top layer: what drives the layers below from the command line.

* ``build_report``  build a profile's report (its notebook executed, exported, swapped in, published);
* ``verify``        retrain published runs and check them against their published copies (``make reproduce``);
* ``bench``         the cost of each clipping method per step (``make bench``), with ``breakdown`` of a run;
* ``workers``       runs per hour under each worker and thread setting;
* ``kernel_settings`` one fixed run under each oneDNN setting of this CPU.

Below it, ``analysis`` computes and draws, ``study`` plans and runs; neither imports this layer.
"""
