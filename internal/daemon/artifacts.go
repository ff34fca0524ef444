package daemon

import (
	"encoding/json"
	"net/http"

	"banger/internal/api"
	"banger/internal/image"
	"banger/internal/vm"
)

func (s *Server) kernelList(w http.ResponseWriter, r *http.Request) error {
	ks, err := s.Images.Kernels(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, ks)
	return nil
}

func (s *Server) kernelShow(w http.ResponseWriter, r *http.Request) error {
	k, err := s.Images.Kernel(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, k)
	return nil
}

func (s *Server) kernelImport(w http.ResponseWriter, r *http.Request) error {
	var p api.KernelImportParams
	if err := decode(r, &p); err != nil {
		return err
	}
	return s.stream(w, r, func(progress vm.Progress) (any, error) {
		return s.Images.ImportKernel(r.Context(), p, image.Progress(progress))
	})
}

func (s *Server) kernelDelete(w http.ResponseWriter, r *http.Request) error {
	if err := s.Images.DeleteKernel(r.Context(), r.PathValue("name")); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
	return nil
}

func (s *Server) imageList(w http.ResponseWriter, r *http.Request) error {
	imgs, err := s.Images.Images(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, imgs)
	return nil
}

func (s *Server) imageShow(w http.ResponseWriter, r *http.Request) error {
	img, err := s.Images.Image(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, img)
	return nil
}

func (s *Server) imageBuild(w http.ResponseWriter, r *http.Request) error {
	var p api.ImageBuildParams
	if err := decode(r, &p); err != nil {
		return err
	}
	return s.stream(w, r, func(progress vm.Progress) (any, error) {
		return s.Images.Build(r.Context(), p, image.Progress(progress))
	})
}

func (s *Server) imageRegister(w http.ResponseWriter, r *http.Request) error {
	var p api.ImageRegisterParams
	if err := decode(r, &p); err != nil {
		return err
	}
	img, err := s.Images.Register(r.Context(), p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, img)
	return nil
}

func (s *Server) imageDelete(w http.ResponseWriter, r *http.Request) error {
	if err := s.Images.DeleteImage(r.Context(), r.PathValue("name")); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
	return nil
}

func (s *Server) kernelPull(w http.ResponseWriter, r *http.Request) error {
	var p api.KernelPullParams
	if err := decode(r, &p); err != nil {
		return err
	}
	return s.stream(w, r, func(progress vm.Progress) (any, error) {
		return s.Images.PullKernel(r.Context(), p, image.Progress(progress))
	})
}

func (s *Server) imagePull(w http.ResponseWriter, r *http.Request) error {
	var p api.ImagePullParams
	if err := decode(r, &p); err != nil {
		return err
	}
	return s.stream(w, r, func(progress vm.Progress) (any, error) {
		return s.Images.PullImage(r.Context(), p, image.Progress(progress))
	})
}

func (s *Server) catalogShow(w http.ResponseWriter, r *http.Request) error {
	c, err := s.Images.LoadCatalog(r.Context(), r.URL.Query().Get("catalog"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, c)
	return nil
}

// imageBundle streams an image as a bundle (.tar.zst). A failure after
// the first byte is reported in the X-Banger-Error trailer, so a client
// never mistakes a cut stream for a whole bundle.
func (s *Server) imageBundle(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	if _, err := s.Images.Image(r.Context(), name); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/zstd")
	w.Header().Set("Trailer", api.ErrorTrailer)
	w.WriteHeader(http.StatusOK)
	if err := s.Images.ExportBundle(r.Context(), name, w); err != nil {
		ae := s.toAPIError(err, opID(r.Context()))
		s.Log.Warn("image export failed", "op", ae.OpID, "image", name, "err", ae.Message)
		b, _ := json.Marshal(ae)
		w.Header().Set(api.ErrorTrailer, string(b))
	}
	return nil
}
