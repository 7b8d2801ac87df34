"""Rate-distortion-perception evaluation behind ``hific eval``.

Modules, in the order data flows:

- :mod:`~hificli.eval.baselines`: classical codecs through Python libraries (Pillow, imagecodecs,
  pillow-heif), a quality sweep each and a search for the quality that matches a target bpp;
- :mod:`~hificli.eval.metrics`: PSNR and MS-SSIM (torch, our own code) and LPIPS through
  :mod:`hificli.perceptual`;
- :mod:`~hificli.eval.runner`: evaluates every image with every codec, in a process pool for ``-j N``;
- :mod:`~hificli.eval.bdrate`: Bjontegaard delta rate (numpy only);
- :mod:`~hificli.eval.report`: CompressAI-style JSON, BD-rate per image then averaged, rich tables;
- :mod:`~hificli.eval.plot`: bpp against PSNR, MS-SSIM and LPIPS (matplotlib, optional).

Nothing here is imported by ``hific --help``: the command imports these modules when it runs.
"""
