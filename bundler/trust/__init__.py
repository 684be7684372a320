"""Trust: detached signatures over a bundle, in bundler's format and OpenSSF's."""
